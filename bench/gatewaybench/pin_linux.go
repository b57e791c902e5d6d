//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// canPin says whether -pin works on this OS.
const canPin = true

// pinSelf checks that this process may run on at least two CPUs, takes the
// first two of them as the server CPU and the client CPU, pins every thread
// of this process to the client CPU and sets GOMAXPROCS to 1. The
// pinning's restore undoes both.
func pinSelf() (*pinning, error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("-pin: reading the CPU affinity: %w", err)
	}
	cpus := cpusIn(&old)
	if len(cpus) < 2 {
		return nil, fmt.Errorf("-pin needs at least 2 CPUs in this process's affinity mask, it has %d (%v)", len(cpus), cpus)
	}
	var client unix.CPUSet
	client.Set(cpus[1])
	if err := setProcessAffinity(&client); err != nil {
		return nil, errors.Join(fmt.Errorf("-pin: %w", err), setProcessAffinity(&old))
	}
	procs := runtime.GOMAXPROCS(1)
	return &pinning{server: cpus[0], client: cpus[1], undo: func() error {
		runtime.GOMAXPROCS(procs)
		return setProcessAffinity(&old)
	}}, nil
}

// setProcessAffinity sets the CPU affinity of every thread of this process
// (sched_setaffinity sets one thread's). It lists the threads again until
// no new one appears: a thread created meanwhile by a thread not yet done
// has the old affinity, one created later inherits the new one.
func setProcessAffinity(set *unix.CPUSet) error {
	done := map[int]bool{}
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("setting the CPU affinity of thread %d: %w", tid, err)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			return nil
		}
	}
}

// startOnCPU starts cmd pinned to cpu: it forks from an OS thread pinned
// to cpu, whose affinity every thread of the child inherits from its first
// instruction on. That thread is locked to its goroutine meanwhile, so that
// no other goroutine runs on it; threads that the runtime creates
// meanwhile come from its template thread, not from a locked one, and keep
// this process's affinity. Then the thread gets its affinity back, or, if
// that fails, exits with its goroutine (which ends locked to it).
func startOnCPU(cmd *exec.Cmd, cpu int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var old, set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			errc <- fmt.Errorf("reading the CPU affinity: %w", err)
			return
		}
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- fmt.Errorf("pinning to CPU %d: %w", cpu, err)
			return
		}
		errc <- cmd.Start()
		if unix.SchedSetaffinity(0, &old) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-errc
}

// cpusOf returns the CPUs this process (its calling thread) may run on, or
// nil if they cannot be read.
func cpusOf() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	return cpusIn(&set)
}

// cpusIn lists the CPUs in set, in increasing order.
func cpusIn(set *unix.CPUSet) []int {
	var cpus []int
	for c, n := 0, set.Count(); len(cpus) < n; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}
