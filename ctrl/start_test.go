package ctrl

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/snapgate/snapgate/store"
)

// A flag naming a bad address or socket path fails New with one message
// that says what, where and why once, before the data dir is created.
func TestNewStartErrorsTouchNoStore(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "ctrl.sock")
	long := filepath.Join(dir, strings.Repeat("d", 100), "ctrl.sock")
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"socket under a file", func(c *Config) { c.AdminSocket = filepath.Join(file, "ctrl.sock") },
			"admin socket " + file + "/ctrl.sock: mkdir " + file + ": not a directory"},
		{"socket is a directory", func(c *Config) { c.AdminSocket = dir },
			"admin socket " + dir + ": path exists and is a directory, not a socket; refusing to replace it"},
		{"socket path too long", func(c *Config) { c.AdminSocket = long },
			"admin socket " + long + ": path too long: a unix socket path holds at most 107 bytes, and this one needs " +
				strconv.Itoa(len(filepath.Dir(long))+19) + " (the path, or its directory plus 19 for a temporary name)"},
		{"bad port", func(c *Config) { c.PublishAddr = "127.0.0.1:99999" }, "stream listener 127.0.0.1:99999: invalid port"},
		{"no port", func(c *Config) { c.PublishAddr = "localhost" }, "stream listener localhost: missing port in address"},
		{"port in use", func(c *Config) { c.PublishAddr = busy.Addr().String() },
			"stream listener " + busy.Addr().String() + ": bind: address already in use"},
		{"metrics port in use", func(c *Config) { c.MetricsAddr = busy.Addr().String() },
			"metrics listener " + busy.Addr().String() + ": bind: address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{InsecureStream: true, DataDir: data, AdminSocket: sock, PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}
			tc.mod(&cfg)
			s, err := New(cfg)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if err.Error() != tc.want {
				t.Fatalf("New:\n got %s\nwant %s", err, tc.want)
			}
			if _, err := os.Lstat(data); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a failed start touched the data dir: %v", err)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a failed start left the admin socket behind: %v", err)
			}
		})
	}
	if _, err := os.Lstat(filepath.Dir(long)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a socket path too long still had its directory created: %v", err)
	}
}

// A start that fails after opening the store (a stored document ctrl cannot
// read) releases the store's lock and every socket: the store opens again
// at once, and a ctrl on the repaired store starts on the same socket.
func TestFailedStartReleasesStore(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenPebble(filepath.Join(dir, "store"), store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(store.Mutation{Kind: kindRoute, ID: "broken", Body: []byte(`{"not json`)}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	cfg := Config{InsecureStream: true, DataDir: dir, AdminSocket: filepath.Join(dir, "admin.sock"), PublishAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}
	if _, err := New(cfg); err == nil || !strings.HasPrefix(err.Error(), `stored route "broken" (version 1) cannot be decoded: `) {
		t.Fatalf("New over an unreadable document: %v", err)
	}
	if _, err := os.Lstat(cfg.AdminSocket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed start left its admin socket: %v", err)
	}
	st, err = store.OpenPebble(filepath.Join(dir, "store"), store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("the failed start kept the store: %v", err)
	}
	if _, _, err := st.Apply(store.Mutation{Kind: kindRoute, ID: "broken"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	h := startCtrl(t, dir, nil)
	if _, err := h.c.Status(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// A stored document of a kind ctrl does not know (a newer ctrl wrote it)
// refuses the start, naming it, rather than building snapshots without it.
func TestUnknownStoredKindRefused(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenPebble(filepath.Join(dir, "store"), store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(store.Mutation{Kind: "waf-rule", ID: "w1", Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	cfg := Config{InsecureStream: true, DataDir: dir, AdminSocket: filepath.Join(dir, "admin.sock"), PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), `stored document waf-rule "w1" (revision 1) is of a kind this ctrl does not know`) {
		t.Fatalf("New over a document of an unknown kind: %v", err)
	}
}

// Close without Run releases the ports New bound, which Run's servers
// would otherwise have closed.
func TestCloseWithoutRunReleasesListeners(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{InsecureStream: true, DataDir: dir, AdminSocket: filepath.Join(dir, "admin.sock"),
		PublishAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{s.PublishAddr(), s.MetricsAddr()}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is still bound after Close: %v", a, err)
		}
		ln.Close()
	}
}
