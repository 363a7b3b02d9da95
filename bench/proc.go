package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Bounded waits for processes the harness started.
const (
	stopGrace   = 5 * time.Second // SIGTERM to SIGKILL
	killWait    = 2 * time.Second // SIGKILL to giving up on the wait
	startupWait = 15 * time.Second
)

// proc is one child process. It runs in its own process group so that
// stopping it also stops anything it forked (nginx's worker), and it gets
// SIGKILL from the kernel if the harness dies without cleaning up.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// startProc starts bin with args, stdout and stderr going to dir/name.log. With
// cpu >= 0 and pinning available, it runs under taskset so that every thread
// of the child inherits the affinity from its first instruction.
func startProc(name, dir string, pin Pinning, cpu int, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	argv := append([]string{bin}, args...)
	if pin.Enabled && cpu >= 0 {
		argv = append([]string{pin.Taskset, "-c", strconv.Itoa(cpu)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after stopGrace.
func (p *proc) stop() error {
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("stop %s (pid %d): did not exit within %v of SIGTERM; killed", p.name, pgid, stopGrace)
	case <-time.After(killWait):
		return fmt.Errorf("stop %s (pid %d): still running %v after SIGKILL", p.name, pgid, killWait)
	}
}

// logTail returns the end of the process's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(bytes.TrimSpace(b))
}

// waitTCP waits until addr accepts connections, failing early when p exits.
func waitTCP(ctx context.Context, p *proc, addr string) error {
	deadline := time.Now().Add(startupWait)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before listening on %s (%v); log %s:\n%s", p.name, addr, p.waitErr, p.logPath, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not accepting within %v: %v", p.name, addr, startupWait, err)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// freeAddr returns a 127.0.0.1 address nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Pinning says where processes run. Proxies get ProxyCPU; the load generator
// (this process), the backends and ctrl share LoadCPU.
type Pinning struct {
	Enabled           bool
	Taskset           string
	ProxyCPU, LoadCPU int
	// Note explains the choice for the report.
	Note string
}

// DetectPinning pins when taskset exists and this process may run on at
// least two CPUs; otherwise it says why not.
func DetectPinning(want bool) Pinning {
	if !want {
		return Pinning{Note: "pinning off (--no-pin)"}
	}
	cpus, err := allowedCPUs()
	if err != nil {
		return Pinning{Note: "pinning unavailable: " + err.Error()}
	}
	if len(cpus) < 2 {
		return Pinning{Note: fmt.Sprintf("pinning unavailable: only CPU %v allowed", cpus)}
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return Pinning{Note: "pinning unavailable: taskset (util-linux) not installed"}
	}
	return Pinning{Enabled: true, Taskset: ts, ProxyCPU: cpus[0], LoadCPU: cpus[1],
		Note: fmt.Sprintf("proxy under test on CPU %d; load generator, backends and ctrl on CPU %d", cpus[0], cpus[1])}
}

func allowedCPUs() ([]int, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return ParseCPUList(strings.TrimSpace(v))
		}
	}
	return nil, errors.New("no Cpus_allowed_list in /proc/self/status")
}

// ParseCPUList parses a kernel CPU list such as "0-3,6,8-9".
func ParseCPUList(s string) ([]int, error) {
	var cpus []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("cpu list %q: bad cpu %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("cpu list %q: bad range %q", s, part)
			}
		}
		if b-a > 4096 || len(cpus) > 4096 {
			return nil, fmt.Errorf("cpu list %q: too many cpus", s)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// pinSelf moves every thread of this process to cpu. sched_setaffinity acts
// on one thread, and new threads inherit from the thread that creates them,
// so pinning all current threads (twice, for threads born during the first
// pass) covers the process.
func pinSelf(cpu int) error {
	if cpu < 0 || cpu >= 64 {
		return fmt.Errorf("pin self: cpu %d outside the 64-cpu mask", cpu)
	}
	mask := uint64(1) << cpu
	for range 2 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("pin self: %w", err)
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)))
			if errno != 0 && errno != syscall.ESRCH {
				return fmt.Errorf("pin self: sched_setaffinity(tid %d, cpu %d): %w", tid, cpu, errno)
			}
		}
	}
	return nil
}
