package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStat is the part of /proc/<pid>/stat the harness uses (proc(5)).
type ProcStat struct {
	PID, PPID int
	Comm      string
	State     byte
	// UTime and STime are CPU time in clock ticks (ClockTicks per second).
	UTime, STime uint64
	// RSSPages is the resident set in pages.
	RSSPages int64
}

// ParseStat parses the contents of /proc/<pid>/stat. The command name sits in
// parentheses and may itself contain spaces and ')', so the fields are counted
// from the last ')'.
func ParseStat(b []byte) (ProcStat, error) {
	var s ProcStat
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return s, errors.New("proc stat: no (comm) field")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil || pid < 0 {
		return s, fmt.Errorf("proc stat: pid %q is not a number", bytes.TrimSpace(b[:open]))
	}
	s.PID, s.Comm = pid, string(b[open+1:end])
	// fields[0] is field 3 (state) of proc(5).
	fields := bytes.Fields(b[end+1:])
	const need = 24 - 2 // up to field 24, rss
	if len(fields) < need {
		return s, fmt.Errorf("proc stat: pid %d: %d fields after comm, want at least %d", pid, len(fields), need)
	}
	if len(fields[0]) != 1 {
		return s, fmt.Errorf("proc stat: pid %d: state %q is not one letter", pid, fields[0])
	}
	s.State = fields[0][0]
	if s.PPID, err = strconv.Atoi(string(fields[4-3])); err != nil {
		return s, fmt.Errorf("proc stat: pid %d: ppid: %w", pid, err)
	}
	if s.UTime, err = strconv.ParseUint(string(fields[14-3]), 10, 64); err != nil {
		return s, fmt.Errorf("proc stat: pid %d: utime: %w", pid, err)
	}
	if s.STime, err = strconv.ParseUint(string(fields[15-3]), 10, 64); err != nil {
		return s, fmt.Errorf("proc stat: pid %d: stime: %w", pid, err)
	}
	if s.RSSPages, err = strconv.ParseInt(string(fields[24-3]), 10, 64); err != nil {
		return s, fmt.Errorf("proc stat: pid %d: rss: %w", pid, err)
	}
	return s, nil
}

// Usage is a process tree's CPU time and memory at one moment.
type Usage struct {
	Ticks    uint64 // utime+stime of the process and its live descendants
	RSSBytes int64
}

// UsageOf sums CPU ticks and RSS over pids, which must all be alive: a
// few file reads, cheap enough to take while load runs (ProcessTree, which
// finds them, scans all of /proc). Time of children that already exited is
// not included; the proxies here keep their workers for the whole run.
func UsageOf(pids []int) (Usage, error) {
	page := int64(os.Getpagesize())
	var u Usage
	for _, p := range pids {
		st, err := readStat(p)
		if err != nil {
			return Usage{}, err
		}
		u.Ticks += st.UTime + st.STime
		u.RSSBytes += st.RSSPages * page
	}
	return u, nil
}

// ProcessTree is pid and its live descendants (nginx's worker is a child of
// its master).
func ProcessTree(pid int) ([]int, error) {
	root, err := readStat(pid)
	if err != nil {
		return nil, err
	}
	children := map[int][]ProcStat{}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			p, err := strconv.Atoi(e.Name())
			if err != nil || p == pid {
				continue
			}
			// A process may exit between ReadDir and the read; skip it.
			if st, err := readStat(p); err == nil {
				children[st.PPID] = append(children[st.PPID], st)
			}
		}
	}
	var tree []int
	queue := []ProcStat{root}
	for len(queue) > 0 && len(queue) < 1<<16 {
		st := queue[0]
		queue = queue[1:]
		tree = append(tree, st.PID)
		queue = append(queue, children[st.PID]...)
	}
	return tree, nil
}

func readStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, err
	}
	return ParseStat(b)
}

// atClkTck is AT_CLKTCK in the ELF auxiliary vector: the kernel's USER_HZ,
// the unit of utime and stime.
const atClkTck = 17

// ClockTicks returns the clock ticks per second of /proc/<pid>/stat, read
// from /proc/self/auxv because sysconf(_SC_CLK_TCK) needs cgo. USER_HZ is 100
// on every mainstream Linux architecture, the fallback.
func ClockTicks() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	return parseAuxvClkTck(b, 100)
}

func parseAuxvClkTck(b []byte, fallback int64) int64 {
	for ; len(b) >= 16; b = b[16:] {
		key, val := binary.NativeEndian.Uint64(b), binary.NativeEndian.Uint64(b[8:])
		if key == 0 {
			break
		}
		if key == atClkTck && val > 0 && val < 1e6 {
			return int64(val)
		}
	}
	return fallback
}

// CPUIdle returns how many clock ticks CPU cpu has spent idle (/proc/stat's
// idle and iowait fields). Unlike the busy fields, which the kernel fills by
// sampling the tick, idle time on a tickless kernel is measured at every
// idle entry and exit, so wall time minus idle is the CPU's exact busy time.
// The sampled busy fields are not usable for that: on our VMs a 10 s window
// of a proxy at 5000 req/s read 301-678 busy ticks against 238-281 measured,
// and 67-538 ticks over identical runs.
func CPUIdle(cpu int) (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	prefix := "cpu" + strconv.Itoa(cpu) + " "
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 5 {
			return 0, fmt.Errorf("/proc/stat %s: %d fields, want at least 5", strings.TrimSpace(prefix), len(f))
		}
		var idle uint64
		for i := 3; i <= 4; i++ { // idle, iowait
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/stat %s: field %d: %w", strings.TrimSpace(prefix), i+1, err)
			}
			idle += v
		}
		return idle, nil
	}
	return 0, fmt.Errorf("/proc/stat has no line for cpu%d", cpu)
}
