package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/loadtest"
)

func TestParseStat(t *testing.T) {
	line := "4242 (we)ird (name)) S 17 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 123456789 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := ParseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := ProcStat{PID: 4242, PPID: 17, Comm: "we)ird (name)", State: 'S', UTime: 250, STime: 75, RSSPages: 3000}
	if st != want {
		t.Fatalf("ParseStat = %+v, want %+v", st, want)
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	st, err = ParseStat(self)
	if err != nil || st.PID != os.Getpid() || st.PPID != os.Getppid() || st.RSSPages <= 0 {
		t.Fatalf("own stat = %+v, %v", st, err)
	}
	for _, bad := range []string{"", "12", "x (a) S 1", "12 (a) S 1 2 3", "12 (a) SS " + strings.Repeat("1 ", 30), "12 (a) S x" + strings.Repeat(" 1", 30)} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) succeeded", bad)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 1 0 1 2 3 4 5 6"))
	f.Add([]byte("4242 (a) b) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"))
	f.Add([]byte(") ( 1 2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStat(b)
		if err == nil && (st.PID < 0 || !bytes.Contains(b, []byte(st.Comm))) {
			t.Fatalf("accepted %q as %+v", b, st)
		}
	})
}

func TestUsageCountsChildren(t *testing.T) {
	// A child that burns CPU: its ticks must appear in our tree's usage.
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
	if err := cmd.Start(); err != nil {
		t.Skip("no sh:", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	usage := func(pid int) Usage {
		t.Helper()
		pids, err := ProcessTree(pid)
		if err != nil {
			t.Fatal(err)
		}
		u, err := UsageOf(pids)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for {
		child, tree := usage(cmd.Process.Pid), usage(os.Getpid())
		if child.Ticks > 0 && tree.Ticks >= child.Ticks && tree.RSSBytes > child.RSSBytes {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child usage %+v never showed in the tree %+v", child, tree)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClockTicks(t *testing.T) {
	aux := make([]byte, 48)
	binary.NativeEndian.PutUint64(aux[0:], 6)
	binary.NativeEndian.PutUint64(aux[8:], 4096)
	binary.NativeEndian.PutUint64(aux[16:], atClkTck)
	binary.NativeEndian.PutUint64(aux[24:], 250)
	if got := parseAuxvClkTck(aux, 100); got != 250 {
		t.Fatalf("parseAuxvClkTck = %d, want 250", got)
	}
	if got := parseAuxvClkTck(aux[:16], 100); got != 100 {
		t.Fatalf("without AT_CLKTCK = %d, want the fallback", got)
	}
	if hz := ClockTicks(); hz <= 0 {
		t.Fatalf("ClockTicks = %d", hz)
	}
}

func TestParseCPUList(t *testing.T) {
	got, err := ParseCPUList("0-2,5,7-8")
	if err != nil || !equalInts(got, []int{0, 1, 2, 5, 7, 8}) {
		t.Fatalf("ParseCPUList = %v, %v", got, err)
	}
	for _, bad := range []string{"", "a", "3-1", "1,,2", "0-999999"} {
		if _, err := ParseCPUList(bad); err == nil {
			t.Errorf("ParseCPUList(%q) succeeded", bad)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestScanRequest(t *testing.T) {
	for _, tc := range []struct {
		in               string
		head, body, code int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, 0, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 27, 0, 0},
		{"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello", 38, 5, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0, 0, 0},
		{"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, 501},
		{"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 0, 0, 400},
		{"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 0, 0, 400},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, 0, 400},
		{"GET /\r\n\r\n", 0, 0, 400},
		{"GET / HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", 2000), 0, 0, 431},
	} {
		head, body, code := ScanRequest([]byte(tc.in))
		if head != tc.head || body != tc.body || code != tc.code {
			t.Errorf("ScanRequest(%.40q) = %d, %d, %d; want %d, %d, %d", tc.in, head, body, code, tc.head, tc.body, tc.code)
		}
	}
}

func FuzzScanRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		head, body, code := ScanRequest(b)
		if head < 0 || head > len(b) || body < 0 || (code != 0 && head != 0) {
			t.Fatalf("ScanRequest(%q) = %d, %d, %d", b, head, body, code)
		}
	})
}

func TestReadResponse(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
	r := bufio.NewReader(strings.NewReader(in))
	status, body, err := readResponse(r, nil)
	if err != nil || status != 200 || string(body) != "hello" {
		t.Fatalf("first = %d %q %v", status, body, err)
	}
	status, body, err = readResponse(r, body[:0])
	if err != nil || status != 404 || len(body) != 0 {
		t.Fatalf("second = %d %q %v", status, body, err)
	}
	for _, bad := range []string{
		"HTTP/1.1 200 OK\r\n\r\n", // no length
		"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
	} {
		if _, _, err := readResponse(bufio.NewReader(strings.NewReader(bad)), nil); err == nil {
			t.Errorf("readResponse(%q) succeeded", bad)
		}
	}
	if _, _, err := readResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n\r\n")), nil); !errors.Is(err, errNoLength) {
		t.Errorf("no Content-Length: %v, want errNoLength", err)
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		status, body, err := readResponse(bufio.NewReader(bytes.NewReader(b)), nil)
		if err == nil && (status < 100 || len(body) > maxProbeBody) {
			t.Fatalf("accepted %q: %d, %d bytes", b, status, len(body))
		}
	})
}

// startBackend runs ServeBackend on a real port for the test's lifetime.
func startBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeBackend(ctx, ln, name) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeBackend: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ServeBackend did not return after cancel")
		}
	})
	return ln.Addr().String()
}

func TestBackendPipelinedAndBodies(t *testing.T) {
	addr := startBackend(t, "alpha")
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// Two pipelined requests, the second with a body split across writes.
	c.Write([]byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nab"))
	time.Sleep(10 * time.Millisecond)
	c.Write([]byte("cdGET /c HTTP/1.1\r\nHost: x\r\n\r\n"))
	r := bufio.NewReader(c)
	for i := range 3 {
		status, body, err := readResponse(r, nil)
		if err != nil || status != 200 || !bytes.Equal(body, BackendBody("alpha")) || len(body) != BodySize {
			t.Fatalf("response %d: %d %q %v", i, status, body, err)
		}
	}
	c.Write([]byte("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
	if status, _, err := readResponse(r, nil); err != nil || status != 501 {
		t.Fatalf("chunked request: %d %v, want 501", status, err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after 501: %v", err)
	}
}

func TestPeerConfigs(t *testing.T) {
	dir := t.TempDir()
	n := NginxConfig(dir, "127.0.0.1:18080", "127.0.0.1:19001", false)
	for _, want := range []string{"daemon off;", "worker_processes 1;", "access_log off;", "keepalive 64;",
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`, "listen 127.0.0.1:18080;", "server 127.0.0.1:19001;",
		"pid " + filepath.Join(dir, "nginx.pid") + ";",
		// The edge's per-request work, and no reconnect every 1000 requests.
		"X-Forwarded-For $proxy_add_x_forwarded_for;", "X-Request-Id $pid-$connection-$connection_requests;", "keepalive_requests 1000000;"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx config lacks %q:\n%s", want, n)
		}
	}
	if strings.Contains(n, "user ") || !strings.Contains(NginxConfig(dir, "a:1", "b:2", true), "user root;") {
		t.Error("user directive must appear exactly when running as root")
	}
	h := HAProxyConfig("127.0.0.1:18081", "127.0.0.1:19001")
	for _, want := range []string{"nbthread 1", "http-reuse always", "bind 127.0.0.1:18081", "server b1 127.0.0.1:19001", "mode http",
		"option forwardfor", "X-Forwarded-Host", "unique-id-format %pid-%rt", "unique-id-header X-Request-Id"} {
		if !strings.Contains(h, want) {
			t.Errorf("haproxy config lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(h, "log ") || strings.Contains(h, "daemon") {
		t.Errorf("haproxy config must not log or daemonize:\n%s", h)
	}
	// Where the peers are installed, they must accept what we generate.
	peers, err := preparePeers(dir, map[string]string{"nginx": "127.0.0.1:18080", "haproxy": "127.0.0.1:18081"}, "127.0.0.1:19001")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.skip != "" {
			t.Logf("%s: %s", p.name, p.skip)
			continue
		}
		check := append([]string{"-t"}, p.args...)
		if p.name == "haproxy" {
			check = []string{"-c", "-f", filepath.Join(dir, "haproxy.cfg")}
		}
		if out, err := exec.Command(p.bin, check...).CombinedOutput(); err != nil {
			t.Errorf("%s rejects its config: %v\n%s", p.name, err, out)
		}
	}
}

func TestParseSnapshotBuilt(t *testing.T) {
	line := `time=2026-01-02T03:04:05.250+01:00 level=INFO msg="snapshot built" version=12 parent=11 routes=100010 clusters=2 bytes=12345678 build_time=183.5ms`
	b, ok := ParseSnapshotBuilt(line)
	want := SnapshotBuild{Time: time.Date(2026, 1, 2, 2, 4, 5, 250e6, time.UTC), Version: 12, Routes: 100010, Bytes: 12345678, BuildTime: 183500 * time.Microsecond}
	if !ok || !b.Time.Equal(want.Time) || b.Version != want.Version || b.Routes != want.Routes || b.Bytes != want.Bytes || b.BuildTime != want.BuildTime {
		t.Fatalf("ParseSnapshotBuilt = %+v %v, want %+v", b, ok, want)
	}
	for _, bad := range []string{`time=2026-01-02T03:04:05Z msg="snapshot built" version=x routes=1 bytes=1 build_time=1ms`,
		`time=2026-01-02T03:04:05Z msg="other" version=1 routes=1 bytes=1 build_time=1ms`, `msg="snapshot built" version=1`,
		`msg="snapshot built" version=1 routes=1 bytes=1 build_time=1ms`, `time=yesterday msg="snapshot built" version=1 routes=1 bytes=1 build_time=1ms`} {
		if _, ok := ParseSnapshotBuilt(bad); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

// fixedResult is a loadtest result with round numbers.
func fixedResult(mode string, rate float64, p50, p99 time.Duration, completed int64) *loadtest.Result {
	return &loadtest.Result{
		Mode: mode, TargetRate: rate, Rate: rate, Completed: completed, Scheduled: completed,
		Status: map[string]int64{"200": completed - 2, "502": 2}, Errors: map[string]int64{},
		ErrorRate: 2 / float64(completed),
		Latency:   loadtest.Summary{Count: completed, P50: p50, P90: p99 / 2, P99: p99, P999: 2 * p99, Max: 3 * p99},
		Curve: []loadtest.Point{{Quantile: 0, Latency: p50 / 2}, {Quantile: 0.5, Latency: p50}, {Quantile: 0.99, Latency: p99},
			{Quantile: 0.9999, Latency: 2 * p99}, {Quantile: 1, Latency: 3 * p99}},
	}
}

func fixedReport() *Report {
	us := time.Microsecond
	sc := &Scenario{Name: "steady-1000", Title: "Steady state at 1000 req/s", Runs: []*RunResult{
		{Target: TargetDirect, Label: "direct", CPUPerReqUS: 10, CPUResolutionUS: 2, CoreCPUPerReqUS: -1, HeapAllocsPerReq: -1, RSSBytes: 8 << 20, Result: fixedResult("open", 1000, 100*us, 400*us, 5000)},
		{Target: TargetSnapgate, Label: "snapgate", CPUPerReqUS: 30, CPUResolutionUS: 2, CoreCPUPerReqUS: 34.5, HeapAllocsPerReq: 1.034, RSSBytes: 20 << 20, Result: fixedResult("open", 1000, 200*us, 800*us, 5000)},
		{Target: TargetNginx, Label: "nginx", CPUPerReqUS: 40, CPUResolutionUS: 2, CoreCPUPerReqUS: 46, HeapAllocsPerReq: -1, RSSBytes: 12 << 20, Result: fixedResult("open", 1000, 250*us, 1600*us, 5000)},
	}, Facts: []Fact{{"a fact", "42"}}, Extra: []Series{{Label: "extra <line> & more", Points: []loadtest.Point{{Quantile: 0.5, Latency: time.Millisecond}}}}}
	return &Report{Start: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Mode: "quick", Machine: Machine{CPUs: 2, Model: "Test CPU", Kernel: "6.1", Go: "go1.26"},
		Pinning: "off", ClockTicks: 100, Conns: 16, Duration: 5 * time.Second, Warmup: time.Second, Scenarios: []*Scenario{sc}}
}

func TestReportMarkdown(t *testing.T) {
	md := fixedReport().Markdown()
	for _, want := range []string{
		"# snapgate bench, quick mode, 2026-01-02 03:04 UTC",
		"- machine: 2 CPUs, Test CPU, Linux 6.1, go1.26",
		"| direct | 1000 | 1000 | 100µs | 400µs | 800µs | 1.2ms | 0.04% (2) | 10.0 ±2.0 | — | 8.0 MiB | — | — | — | 0.25× | 0.25× | — |",
		"| snapgate | 1000 | 1000 | 200µs | 800µs | 1.6ms | 2.4ms | 0.04% (2) | 30.0 ±2.0 | 34.5 | 20.0 MiB | 2.00× | 2.00× | 3.00× | 0.50× | 0.75× | 0.75× |",
		"| nginx | 1000 | 1000 | 250µs | 1.6ms | 3.2ms | 4.8ms | 0.04% (2) | 40.0 ±2.0 | 46.0 | 12.0 MiB | 2.50× | 4.00× | 4.00× | — | — | — |",
		"Heap allocations per request in the snapgate process over the run (all of its goroutines, one /metrics scrape included): 1.03.",
		"- a fact: 42",
		"![steady-1000 latency percentiles](steady-1000.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks\n%s\nin\n%s", want, md)
		}
	}
}

func TestSVGWellFormed(t *testing.T) {
	sc := fixedReport().Scenarios[0]
	svg := sc.SVG()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	polylines, texts := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "polyline":
				polylines++
				for _, a := range se.Attr {
					if a.Name.Local == "points" && strings.Contains(a.Value, "NaN") {
						t.Errorf("polyline with NaN: %s", a.Value)
					}
				}
			case "text":
				texts++
			}
		}
	}
	if want := len(sc.Runs) + len(sc.Extra); polylines != want {
		t.Fatalf("%d polylines, want one per series (%d)", polylines, want)
	}
	if !bytes.Contains(svg, []byte("extra &lt;line&gt; &amp; more")) || !bytes.Contains(svg, []byte("99.99%")) {
		t.Errorf("legend or axis missing:\n%s", svg)
	}
	// No data at all still draws a valid frame.
	if err := xml.Unmarshal(PlotSVG("empty", nil), new(struct{})); err != nil {
		t.Fatalf("empty plot: %v", err)
	}
}

func TestReportWrite(t *testing.T) {
	dir := t.TempDir()
	if err := fixedReport().Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.md", "report.json", "steady-1000.svg", "raw/steady-1000-direct.json", "raw/steady-1000-snapgate.json", "raw/steady-1000-nginx.json"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// buildSnapgate builds the snapgate binary into dir, or skips the test when
// the tree does not build (other packages mid-change).
func buildSnapgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "snapgate")
	cmd := exec.Command("go", "build", "-tags=pebblegozstd", "-o", bin, "./cmd/snapgate")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot build snapgate: %v\n%s", err, out)
	}
	return bin
}

func TestSteadyAgainstRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := buildSnapgate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var log bytes.Buffer
	rep, err := Run(ctx, Options{Bin: bin, Scenarios: []string{ScenarioSteady}, Rates: []float64{2000}, Rounds: 2,
		Duration: time.Second, Warmup: 200 * time.Millisecond, NoMax: true, NoPeers: true, NoPin: true, Conns: 4, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	defer os.RemoveAll(rep.WorkDir)
	if len(rep.Scenarios) != 1 || len(rep.Scenarios[0].Runs) != 4 {
		t.Fatalf("report has %d scenarios, want steady with two rounds of direct and snapgate: %+v", len(rep.Scenarios), rep.Scenarios)
	}
	// The second round starts one target later.
	for i, want := range []string{"direct #1", "snapgate #1", "snapgate #2", "direct #2"} {
		if r := rep.Scenarios[0].Runs[i]; r.Label != want || r.Round != 1+i/2 {
			t.Errorf("run %d: %q round %d, want %q round %d", i, r.Label, r.Round, want, 1+i/2)
		}
	}
	if s := rep.Scenarios[0].Summary; len(s) != 2 || s[1].Target != TargetSnapgate || s[1].CPUPerReqUS == nil || s[1].CPUPerReqUS.N != 2 || s[1].P99US.N != 2 {
		t.Errorf("summary over two rounds: %+v", s)
	}
	for _, r := range rep.Scenarios[0].Runs {
		res := r.Result
		if res.Completed < 200 || res.Latency.P50 <= 0 || res.Status["200"] != res.Completed || r.CPUPerReqUS < 0 || r.RSSBytes <= 0 {
			t.Errorf("%s: completed %d, p50 %v, status %v, cpu %.1f µs/req, rss %d", r.Label, res.Completed, res.Latency.P50, res.Status, r.CPUPerReqUS, r.RSSBytes)
		}
	}
	// The edge's allocations per request: its hot path allocates nothing,
	// netpoll one task closure per client event; the load generator's new
	// connections, a scrape and the runtime's span-sized counting add the
	// rest over a run this short (~1.1 per request over quick make bench
	// runs).
	if r := rep.Scenarios[0].Runs[1]; r.Target != TargetSnapgate || r.HeapAllocsPerReq < 0 || r.HeapAllocsPerReq > 5 {
		t.Errorf("%s: %.2f heap allocations per request, want 0–5", r.Label, r.HeapAllocsPerReq)
	}
	if r := rep.Scenarios[0].Runs[0]; r.HeapAllocsPerReq != -1 {
		t.Errorf("%s: %.2f heap allocations per request, want -1 (not the edge)", r.Label, r.HeapAllocsPerReq)
	}
	md := rep.Markdown()
	if !strings.Contains(md, "| snapgate #2 | 2000 | ") || !strings.Contains(md, "| direct #1 | 2000 | ") ||
		!strings.Contains(md, "Heap allocations per request in the snapgate process") || !strings.Contains(md, "Over 2 rounds") {
		t.Errorf("markdown lacks the rows:\n%s", md)
	}
	t.Logf("snapgate: %.2f heap allocations per request", rep.Scenarios[0].Runs[1].HeapAllocsPerReq)
	out := t.TempDir()
	if err := rep.Write(out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"steady-2000.svg", "raw/steady-2000-snapgate-1.json", "raw/steady-2000-snapgate-2.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	assertStopped(t, rep.WorkDir)
}

// assertStopped checks that every process Run started is gone: none has
// the work dir in its command line any more.
func assertStopped(t *testing.T, workDir string) {
	t.Helper()
	if workDir == "" {
		t.Fatal("no work dir in the report")
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Contains(cl, []byte(workDir)) {
			t.Errorf("process %s still running: %q", e.Name(), bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
		}
	}
}

// TestFleetRateLimitAgainstRealProcesses runs the ratelimit scenario on a
// short window: three real edges, one ctrl, a cluster-scope limit. Run
// fails unless the fleet admits 285–315 req/s; the test also checks that
// each edge refused its excess with 429.
func TestFleetRateLimitAgainstRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := buildSnapgate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var log bytes.Buffer
	rep, err := Run(ctx, Options{Bin: bin, Scenarios: []string{ScenarioLimit}, LimitDuration: 5 * time.Second,
		NoPeers: true, NoPin: true, Log: &log})
	if rep != nil {
		defer os.RemoveAll(rep.WorkDir)
	}
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	sc := rep.Scenarios[len(rep.Scenarios)-1]
	if sc.Name != "ratelimit" || len(sc.Runs) != fleetEdges {
		t.Fatalf("scenario %q with %d runs, want ratelimit with %d", sc.Name, len(sc.Runs), fleetEdges)
	}
	for _, r := range sc.Runs {
		if r.Result.Status["200"] == 0 || r.Result.Status["429"] == 0 {
			t.Errorf("%s: statuses %v, want both admitted and limited requests", r.Label, r.Result.Status)
		}
		// Measured concurrently on three edges: no per-request figures.
		if r.CPUPerReqUS != -1 || r.CoreCPUPerReqUS != -1 || r.HeapAllocsPerReq != -1 {
			t.Errorf("%s: cpu %v core %v allocs %v per request, want -1 (not measured)", r.Label, r.CPUPerReqUS, r.CoreCPUPerReqUS, r.HeapAllocsPerReq)
		}
	}
	if !strings.Contains(rep.Markdown(), "within the 285–315 band") {
		t.Errorf("the report does not state the verdict:\n%s", rep.Markdown())
	}
	assertStopped(t, rep.WorkDir)
}

// CPUIdle reads this machine's /proc/stat: a CPU's idle ticks exist, never
// go down and never grow faster than the wall clock; a CPU that does not
// exist is an error.
func TestCPUIdle(t *testing.T) {
	a, err := CPUIdle(0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(50 * time.Millisecond)
	b, err := CPUIdle(0)
	wall := time.Since(start)
	if err != nil || b < a {
		t.Fatalf("idle ticks %d then %d (%v)", a, b, err)
	}
	// ±1 tick for where each read falls in its tick.
	if ticks := ClockTicks(); float64(b-a) > wall.Seconds()*float64(ticks)+2 {
		t.Fatalf("%d idle ticks in %v at %d ticks/s", b-a, wall, ticks)
	}
	if _, err := CPUIdle(1 << 20); err == nil {
		t.Fatal("no error for a CPU that does not exist")
	}
}

// A run with more than 0.1 % errors gets no ratios (its requests were not
// all proxied), and the load generator's lateness is printed under the
// table.
func TestReportErredRunsAndPacer(t *testing.T) {
	rep := fixedReport()
	sc := rep.Scenarios[0]
	bad := fixedResult("open", 1000, 150*time.Microsecond, 500*time.Microsecond, 5000)
	bad.ErrorRate = 0.02
	sc.Runs = append(sc.Runs, &RunResult{Target: TargetHAProxy, Label: "haproxy", CPUPerReqUS: 20, CPUResolutionUS: 2, CoreCPUPerReqUS: 25, HeapAllocsPerReq: -1, RSSBytes: 8 << 20, Result: bad})
	sc.Runs[0].Result.Pacer = loadtest.Summary{Count: 5000, P50: 40 * time.Microsecond, P99: 120 * time.Microsecond}
	md := rep.Markdown()
	if n := strings.Count(md, "Heap allocations per request"); n != 1 {
		t.Errorf("%d lines of heap allocations, want 1 (the snapgate row's; the haproxy row has none)", n)
	}
	for _, want := range []string{
		"| haproxy | 1000 | 1000 | 150µs | 500µs | 1ms | 1.5ms | 2% (2) | 20.0 ±2.0 | 25.0 | 8.0 MiB | — | — | — | — | — | — |",
		"Load generator's own lateness (p50 / p99), part of every latency above: direct 40µs / 120µs.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks\n%s\nin\n%s", want, md)
		}
	}
}

// The churn probe's requests go through the edge during the measured run;
// chargeExtra divides the CPU over them too, and leaves unmeasured rows be.
func TestChargeExtra(t *testing.T) {
	r := &RunResult{CPUPerReqUS: 30, CPUResolutionUS: 2, CoreCPUPerReqUS: 36, HeapAllocsPerReq: 2, Result: fixedResult("open", 1000, time.Millisecond, time.Millisecond, 3000)}
	r.chargeExtra(1000)
	if r.CPUPerReqUS != 22.5 || r.CPUResolutionUS != 1.5 || r.CoreCPUPerReqUS != 27 || r.HeapAllocsPerReq != 1.5 {
		t.Errorf("after 1000 extra of 3000: cpu %v ±%v core %v allocs %v, want 22.5 ±1.5 core 27 allocs 1.5", r.CPUPerReqUS, r.CPUResolutionUS, r.CoreCPUPerReqUS, r.HeapAllocsPerReq)
	}
	u := &RunResult{CPUPerReqUS: -1, CoreCPUPerReqUS: -1, HeapAllocsPerReq: -1, Result: fixedResult("open", 1000, time.Millisecond, time.Millisecond, 0)}
	u.chargeExtra(10)
	if u.CPUPerReqUS != -1 || u.CoreCPUPerReqUS != -1 {
		t.Errorf("a row with nothing completed changed: %+v", u)
	}
	p := &RunResult{CPUPerReqUS: 30, CoreCPUPerReqUS: -1, HeapAllocsPerReq: -1, Result: fixedResult("open", 1000, time.Millisecond, time.Millisecond, 3000)}
	p.chargeExtra(3000)
	if p.CPUPerReqUS != 15 || p.CoreCPUPerReqUS != -1 || p.HeapAllocsPerReq != -1 {
		t.Errorf("unpinned row: cpu %v core %v, want 15 and -1", p.CPUPerReqUS, p.CoreCPUPerReqUS)
	}
}
