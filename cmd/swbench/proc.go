//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procSampler reads server processes' CPU time and resident memory from
// /proc, summed over them. Without a pid above 0, or without /proc, it
// reports nothing.
type procSampler struct {
	pids   []int
	failed bool
}

func newProcSampler(pids ...int) *procSampler {
	p := &procSampler{}
	for _, pid := range pids {
		if pid > 0 {
			p.pids = append(p.pids, pid)
		}
	}
	return p
}

func (p *procSampler) ok() bool { return len(p.pids) > 0 && !p.failed }

// cpu returns the processes' user plus system CPU seconds.
func (p *procSampler) cpu() float64 {
	var sum float64
	for _, pid := range p.pids {
		sum += p.cpuOf(pid)
	}
	return sum
}

func (p *procSampler) cpuOf(pid int) float64 {
	if !p.ok() {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		p.failed = true
		return 0
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	fields := bytes.Fields(b[i+1:])
	if i < 0 || len(fields) < 13 {
		p.failed = true
		return 0
	}
	utime, err1 := strconv.ParseInt(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		p.failed = true
		return 0
	}
	return float64(utime+stime) / clockTicks
}

// rss returns the processes' VmRSS in KiB.
func (p *procSampler) rss() int64 {
	var sum int64
	for _, pid := range p.pids {
		sum += p.rssOf(pid)
	}
	return sum
}

func (p *procSampler) rssOf(pid int) int64 {
	if !p.ok() {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		p.failed = true
		return 0
	}
	i := bytes.Index(b, []byte("VmRSS:"))
	if i < 0 {
		p.failed = true
		return 0
	}
	line := b[i+len("VmRSS:"):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) == 0 {
		p.failed = true
		return 0
	}
	kb, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		p.failed = true
		return 0
	}
	return kb
}

// selfCPU returns the CPU seconds swbench itself has used.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit, since
// every client holds a socket, and returns the new soft limit.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("failed to read RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("failed to raise RLIMIT_NOFILE: %w", err)
		}
	}
	return lim.Cur, nil
}
