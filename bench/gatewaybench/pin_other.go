//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

// canPin says whether -pin works on this OS.
const canPin = false

// errNoPin is what -pin does off Linux.
func errNoPin() error { return errors.New("-pin needs Linux (sched_setaffinity)") }

// pinSelf fails: pinning is Linux only.
func pinSelf() (*pinning, error) { return nil, errNoPin() }

// startOnCPU fails: pinning is Linux only.
func startOnCPU(*exec.Cmd, int) error { return errNoPin() }

// cpusOf does not know the CPUs off Linux.
func cpusOf() []int { return nil }
