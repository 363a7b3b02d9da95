package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// runCtrlToExit runs 'snapgate ctrl' with args, expecting it to fail at
// start, and returns its exit code and output.
func runCtrlToExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, append([]string{"ctrl"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running ctrl %q: %v", args, err)
	}
	return exitCode(err), string(out)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// Each start-up failure of the real binary is one line naming the program
// once, then what failed, where and why; none of them creates the data
// dir. A second ctrl is refused by name, and the socket a killed ctrl left
// is cleared by the next start.
func TestCtrlStartErrors(t *testing.T) {
	g := newGateway(t)
	file := filepath.Join(g.dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(g.dir, "ctrl")
	base := func(extra ...string) []string {
		return append([]string{"--data-dir", data, "--admin-socket", g.socket, "--stream-listen", g.stream,
			"--stream-secret-file", g.secret, "--metrics-listen", ""}, extra...)
	}
	for _, tc := range []struct {
		args []string
		code int // 2: the command line is wrong, 1: ctrl could not start
		want string
	}{
		{base("--admin-socket", file+"/ctrl.sock"), 1,
			"snapgate ctrl: admin socket " + file + "/ctrl.sock: mkdir " + file + ": not a directory\n"},
		{base("--data-dir", file+"/data"), 1,
			"snapgate ctrl: data dir " + file + "/data: mkdir " + file + ": not a directory\n"},
		{base("--stream-listen", "127.0.0.1:99999"), 2,
			`snapgate ctrl: --stream-listen "127.0.0.1:99999": want host:port (":8080" for every address): port "99999": want a number from 0 to 65535` + "\n"},
		{base("--metrics-listen", "metrics"), 2,
			`snapgate ctrl: --metrics-listen "metrics": want host:port (":8080" for every address): address metrics: missing port in address` + "\n"},
		{base("--data-dir", ""), 1, "snapgate ctrl: config: DataDir (--data-dir) is empty\n"},
	} {
		code, out := runCtrlToExit(t, tc.args...)
		if code != tc.code || out != tc.want {
			t.Errorf("ctrl %q: exit %d\n got %q\nwant exit %d, %q", tc.args, code, out, tc.code, tc.want)
		}
		if _, err := os.Lstat(data); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("ctrl %q created its data dir: %v", tc.args, err)
		}
	}

	live := g.startCtrl()
	for _, tc := range []struct {
		args []string
		want string
	}{
		// The socket is checked first: a second ctrl on the same flags is named as such.
		{base(), "snapgate ctrl: admin socket " + g.socket + ": another process is listening on it (is ctrl already running?)\n"},
		{base("--admin-socket", g.socket+"2", "--stream-listen", "127.0.0.1:0"),
			"snapgate ctrl: store " + data + "/store: locked by another process (is another ctrl running on this data dir?): resource temporarily unavailable\n"},
	} {
		if code, out := runCtrlToExit(t, tc.args...); code != 1 || out != tc.want {
			t.Errorf("second ctrl %q: exit %d\n got %q\nwant %q", tc.args, code, out, tc.want)
		}
	}
	g.mustCtl("status") // the running one is unaffected

	live.kill(syscall.SIGKILL)
	if fi, err := os.Lstat(g.socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the killed ctrl left no socket file to clear: %v", err)
	}
	g.startCtrl()
	g.mustCtl("status")
}

// ctl names the socket it could not reach once, with the system call's reason.
func TestCtlCannotReachMessage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "ctrl.sock")
	out, err := exec.Command(binPath, "ctl", "--socket", missing, "status").CombinedOutput()
	want := "snapgate ctl: cannot reach ctrl: admin socket " + missing + ": connect: no such file or directory\n" +
		"  is ctrl running? ctl's --socket (or $SNAPGATE_SOCKET) must name ctrl's --admin-socket\n"
	if exitCode(err) != 1 || string(out) != want {
		t.Fatalf("ctl status without ctrl: exit %d (%v)\n got %q\nwant %q", exitCode(err), err, out, want)
	}
}
