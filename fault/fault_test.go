package fault_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/perceptron-cloud/perceptron/fault"
)

func TestCodesThroughWrapping(t *testing.T) {
	base := fault.Wrap(io.ErrUnexpectedEOF, fault.NotFound, "API key not found")
	wrapped := fmt.Errorf("store: %w", base)
	if !errors.Is(wrapped, fault.NotFound) || errors.Is(wrapped, fault.Conflict) {
		t.Fatalf("errors.Is does not see the code through wrapping")
	}
	if !errors.Is(wrapped, io.ErrUnexpectedEOF) {
		t.Fatalf("the cause is lost")
	}
	if got := fault.CodeOf(wrapped); got != fault.NotFound {
		t.Fatalf("CodeOf = %v", got)
	}
	if got := fault.MessageOf(wrapped); got != "API key not found" {
		t.Fatalf("MessageOf = %q", got)
	}
	var fe *fault.Error
	if !errors.As(wrapped, &fe) || fe.Err != io.ErrUnexpectedEOF {
		t.Fatalf("errors.As")
	}
}

func TestCodeOfPlainErrors(t *testing.T) {
	for err, want := range map[error]fault.Code{
		nil:                      fault.Unknown,
		errors.New("boom"):       fault.Unknown,
		context.Canceled:         fault.Canceled,
		context.DeadlineExceeded: fault.Timeout,
		fault.New(fault.InsufficientFunds, "insufficient credits (need at least $0.05 for this request)"): fault.InsufficientFunds,
	} {
		if got := fault.CodeOf(err); got != want {
			t.Errorf("CodeOf(%v) = %v, want %v", err, got, want)
		}
	}
	if fault.MessageOf(errors.New("internal detail")) != "" {
		t.Error("a plain error must have no public message")
	}
	if fault.Code(99).String() != "code(99)" || fault.Conflict.String() != "conflict" {
		t.Error("code names")
	}
}
