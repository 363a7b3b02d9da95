package h1

import (
	"bytes"
	"testing"
)

// TestNormalizePath covers the rules in path.go and the path-confusion
// spellings that have bypassed prefix policies in other proxies.
func TestNormalizePath(t *testing.T) {
	ok := []struct{ in, want string }{
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/.well-known/x", "/.well-known/x"},
		{"/a/..b/c", "/a/..b/c"},
		{"/a/b.", "/a/b."},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/a/..", "/"},
		{"/.", "/"},
		{"/public/../admin", "/admin"},
		{"/public/%2e%2e/admin", "/admin"},
		{"/public/%2E%2E/admin", "/admin"},
		{"/public/.%2e/admin", "/admin"},
		{"/public/%2e/admin", "/public/admin"},
		{"//admin", "/admin"},
		{"/a//b///c/", "/a/b/c/"},
		{"/a/.//../b", "/b"},
		{"/%61dmin", "/admin"},
		{"/%7Euser/%5f", "/~user/_"},
		{"/a%20b", "/a%20b"},
		{"/a%2ab%2Cc%3bd", "/a%2Ab%2Cc%3Bd"},     // sub-delims stay escaped: frameworks give them meaning
		{"/admin%3Aops/%40me", "/admin:ops/@me"}, // ':' and '@' are decoded: a route /admin:ops sees it
		{"/a%3Fb%23c%25d", "/a%3Fb%23c%25d"},     // ? # % are not segment characters
		{"/%252e%252e/x", "/%252e%252e/x"},       // decoded once only
		{"/%25", "/%25"},
		{"/a;b/c;d=1", "/a;b/c;d=1"},
		{"/a/..x;/b", "/a/..x;/b"}, // not a dot segment
		{"/a/b;..", "/a/b;.."},
		{"/caf%c3%a9", "/caf%C3%A9"},
		{"/%e2%82%ac", "/%E2%82%AC"},
		{"/%f0%9f%98%80", "/%F0%9F%98%80"},
		{"/%0a%0D", "/%0A%0D"},
		{"/ADMIN", "/ADMIN"}, // paths are case-sensitive; routing decides
	}
	buf := make([]byte, 0, 64)
	for _, tc := range ok {
		got, err := NormalizePath(buf, []byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		// Idempotent: the normal form is a fixed point.
		again, err := NormalizePath(nil, got)
		if err != nil || !bytes.Equal(again, got) {
			t.Errorf("NormalizePath(%q) not idempotent: %q, %v", got, again, err)
		}
	}
	bad := []struct{ in, reason string }{
		{"/..", "path climbs above root"},
		{"/a/../..", "path climbs above root"},
		{"/%2e%2e/etc/passwd", "path climbs above root"},
		{"/a/%2f/b", "encoded slash or backslash in path"},
		{"/admin%2Fx", "encoded slash or backslash in path"},
		{"/a%5c..%5cadmin", "encoded slash or backslash in path"},
		{"/a\\..\\admin", "backslash in path"},
		{"/a%00.html", "encoded NUL in path"},
		{"/a%", "bad percent-encoding in path"},
		{"/a%2", "bad percent-encoding in path"},
		{"/a%zz", "bad percent-encoding in path"},
		{"/%c0%af", "invalid UTF-8 in path"},         // overlong '/'
		{"/%c0%ae%c0%ae/x", "invalid UTF-8 in path"}, // overlong '.'
		{"/%e0%80%af", "invalid UTF-8 in path"},      // 3-byte overlong '/'
		{"/%80", "invalid UTF-8 in path"},            // stray continuation
		{"/%c3", "invalid UTF-8 in path"},            // truncated
		{"/%c3%41", "invalid UTF-8 in path"},         // bad continuation
		{"/%ed%a0%80", "invalid UTF-8 in path"},      // surrogate
		{"/%ff", "invalid UTF-8 in path"},
		// Servlet containers resolve "..;" as "..": /public/..;/admin
		// would be /admin behind a /public route.
		{"/public/..;/admin", "dot segment with parameters in path"},
		{"/public/..;jsessionid=1/admin", "dot segment with parameters in path"},
		{"/public/.;/admin", "dot segment with parameters in path"},
		{"/public/%2e%2e;/admin", "dot segment with parameters in path"},
		{"/a/..;", "dot segment with parameters in path"},
	}
	for _, tc := range bad {
		got, err := NormalizePath(buf, []byte(tc.in))
		if err == nil {
			t.Errorf("NormalizePath(%q) = %q, want error %q", tc.in, got, tc.reason)
			continue
		}
		if err.Status != 400 || err.Reason != tc.reason {
			t.Errorf("NormalizePath(%q): %d %q, want 400 %q", tc.in, err.Status, err.Reason, tc.reason)
		}
	}
}

// TestParseRequestNormalizesPath checks that the parser applies the
// normalisation to origin- and absolute-form targets and keeps the raw path.
func TestParseRequestNormalizesPath(t *testing.T) {
	r, _, err := parseReq(t, "GET /public/%2e%2e//admin/./x?q=%2e%2e HTTP/1.1\r\nHost: a\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Path) != "/admin/x" || string(r.RawPath) != "/public/%2e%2e//admin/./x" || string(r.Query) != "q=%2e%2e" {
		t.Fatalf("path %q raw %q query %q", r.Path, r.RawPath, r.Query)
	}
	r, _, err = parseReq(t, "GET http://b.example/x/../y HTTP/1.1\r\nHost: a\r\n\r\n")
	if err != nil || string(r.Path) != "/y" || string(r.Host) != "b.example" {
		t.Fatalf("absolute-form: path %q host %q err %v", r.Path, r.Host, err)
	}
	if _, _, err := parseReq(t, "GET /a/%2F HTTP/1.1\r\nHost: a\r\n\r\n"); statusOf(err) != 400 {
		t.Fatalf("%%2F accepted: %v", err)
	}
}

func TestParseRequestHostTrailingDot(t *testing.T) {
	for raw, want := range map[string]string{
		"Example.COM.":       "example.com",
		"example.com.:8080":  "example.com",
		"a":                  "a",
		"[::1]:80":           "[::1]",
		"[::ffff:192.0.2.1]": "[::ffff:192.0.2.1]",
		"192.0.2.1:8080":     "192.0.2.1",
		"svc_a.internal":     "svc_a.internal",
	} {
		r, _, err := parseReq(t, "GET / HTTP/1.1\r\nHost: "+raw+"\r\n\r\n")
		if err != nil || string(r.Host) != want {
			t.Errorf("Host %q → %q, %v; want %q", raw, r.Host, err, want)
		}
	}
	for _, raw := range []string{"example.com..", "."} {
		if _, _, err := parseReq(t, "GET / HTTP/1.1\r\nHost: "+raw+"\r\n\r\n"); statusOf(err) != 400 {
			t.Errorf("Host %q accepted: %v", raw, err)
		}
	}
}

func TestNormalizePathAllocs(t *testing.T) {
	buf := make([]byte, 0, 64)
	in := []byte("/public/%2e%2e//admin/%7e/./x")
	if n := testing.AllocsPerRun(100, func() { NormalizePath(buf, in) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func BenchmarkNormalizePath(b *testing.B) {
	buf := make([]byte, 0, 64)
	for _, tc := range []struct{ name, in string }{
		{"clean", "/v1/items/12345/details"},
		{"dirty", "/v1/%69tems/./12345/../12345//details"},
	} {
		in := []byte(tc.in)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NormalizePath(buf, in)
			}
		})
	}
}

// FuzzNormalizePath checks that the normal form never contains what the
// rules remove, is idempotent, and that nothing panics.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/", "//x//", "/%c3%a9", "/a%2fb", "/%c0%af", "/a/b/.", "/..;/x", "/%252e", "/;x/a;b/", "/a;.."} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) == 0 || p[0] != '/' {
			return
		}
		out, err := NormalizePath(make([]byte, 0, len(p)), p)
		if err != nil {
			if err.Status != 400 {
				t.Fatalf("status %d", err.Status)
			}
			return
		}
		if len(out) == 0 || out[0] != '/' || len(out) > len(p) {
			t.Fatalf("%q → %q", p, out)
		}
		if bytes.Contains(out, []byte("//")) || bytes.Contains(out, []byte("/./")) ||
			bytes.Contains(out, []byte("/../")) || bytes.HasSuffix(out, []byte("/.")) ||
			bytes.HasSuffix(out, []byte("/..")) || bytes.IndexByte(out, '\\') >= 0 {
			t.Fatalf("%q → %q keeps a removable form", p, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] == '%' {
				v, ok := hexByte(out, i)
				if !ok || unreserved(v) || v == '/' || v == '\\' || v == 0 {
					t.Fatalf("%q → %q has escape %q", p, out, out[i:min(i+3, len(out))])
				}
				if out[i+1] >= 'a' || out[i+2] >= 'a' {
					t.Fatalf("%q → %q has lowercase hex", p, out)
				}
			}
		}
		again, err := NormalizePath(nil, out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q → %q → %q, %v", p, out, again, err)
		}
		// The servlet reading of a normal path is a normal path without
		// parameters, the same path when it had none, and stable.
		sp := StripParams(nil, out)
		if len(sp) == 0 || sp[0] != '/' || bytes.IndexByte(sp, ';') >= 0 || bytes.Contains(sp, []byte("//")) ||
			(bytes.IndexByte(out, ';') < 0 && !bytes.Equal(sp, out)) || !bytes.Equal(StripParams(nil, sp), sp) {
			t.Fatalf("StripParams(%q) = %q", out, sp)
		}
		if n, err := NormalizePath(nil, sp); err != nil || !bytes.Equal(n, sp) {
			t.Fatalf("StripParams(%q) = %q is not normal: %q, %v", out, sp, n, err)
		}
	})
}

// TestStripParams: a normal-form path as a servlet container reads it,
// every segment's ';' parameters dropped and emptied segments merged.
func TestStripParams(t *testing.T) {
	for in, want := range map[string]string{
		"/":                         "/",
		"/admin":                    "/admin",
		"/admin;x":                  "/admin",
		"/admin;jsessionid=1/users": "/admin/users",
		"/;x/admin":                 "/admin",
		"/;/admin":                  "/admin",
		"/;":                        "/",
		"/a;x;y/b;z/":               "/a/b/",
		"/app/page;jsessionid=ABC":  "/app/page",
		"/admin/;x":                 "/admin/",
		"/a%3Bb/c":                  "/a%3Bb/c",
	} {
		if got := StripParams(nil, []byte(in)); string(got) != want {
			t.Errorf("StripParams(%q) = %q, want %q", in, got, want)
		}
	}
	buf := make([]byte, 0, 64)
	p := []byte("/admin;jsessionid=1/users")
	if n := testing.AllocsPerRun(100, func() { buf = StripParams(buf, p) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
