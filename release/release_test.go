package release_test

import (
	"context"
	"errors"
	"testing"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/release"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

func TestSemverPrecedence(t *testing.T) {
	// Each is lower than the next, as SemVer 2.0.0 section 11 orders them.
	order := []string{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0"}
	for i := 0; i+1 < len(order); i++ {
		a, err := release.Parse(order[i])
		if err != nil {
			t.Fatal(err)
		}
		b, err := release.Parse(order[i+1])
		if err != nil {
			t.Fatal(err)
		}
		if a.Compare(b) != -1 || b.Compare(a) != 1 || a.Compare(a) != 0 {
			t.Errorf("%s < %s does not hold", order[i], order[i+1])
		}
	}
	build, _ := release.Parse("1.0.0+build.7")
	plain, _ := release.Parse("1.0.0")
	if build.Compare(plain) != 0 {
		t.Error("build metadata must not affect precedence")
	}
	for _, bad := range []string{"", "1", "1.2", "1.2.3.4", "01.2.3", "1.2.x", "1.2.3-", "1.2.3-a..b", "v"} {
		if _, err := release.Parse(bad); !errors.Is(err, fault.Invalid) {
			t.Errorf("Parse(%q) = %v, want Invalid", bad, err)
		}
	}
}

func TestServiceLatestAndGet(t *testing.T) {
	ctx := context.Background()
	s := release.NewService(memory.New())
	if _, err := s.Latest(ctx); fault.MessageOf(err) != "no releases found" {
		t.Fatalf("Latest on empty: %v", err)
	}
	for _, v := range []string{"1.9.0", "v1.10.0", "1.10.0-rc.1"} {
		if err := s.Put(ctx, release.Release{Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, release.Release{Version: "not-semver"}); err == nil {
		t.Fatal("an invalid version was stored")
	}
	got, err := s.Latest(ctx)
	if err != nil || got.Version != "1.10.0" {
		t.Fatalf("Latest = %+v, %v", got, err)
	}
	if _, err := s.Get(ctx, "2.0.0"); fault.MessageOf(err) != "release '2.0.0' not found" {
		t.Fatalf("Get missing: %v", err)
	}
	if r, err := s.Get(ctx, "v1.9.0"); err != nil || r.Version != "1.9.0" {
		t.Fatalf("Get with v prefix: %+v, %v", r, err)
	}
}
