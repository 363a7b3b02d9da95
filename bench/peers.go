package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// peerKeepalive is how many idle upstream connections nginx keeps per worker;
// above the load generator's connection count so that no request waits for a
// new upstream connection.
const peerKeepalive = 64

// NginxConfig returns an nginx.conf for one worker in the foreground with
// access logs off and keep-alive upstream connections, every path under dir.
// It does the per-request work the edge does: X-Forwarded-For/-Proto/-Host
// and a request id upstream and back. The id is built as the edge builds
// its own, a per-process part and a counter ($pid-$connection-
// $connection_requests): $request_id is 16 random bytes from OpenSSL's
// generator, about 3-5 % of nginx's CPU per request here (libcrypto and a
// getpid per request), work the edge does not do. keepalive_requests is raised on both
// sides: nginx's default closes connections every 1000 requests, which
// neither the edge nor HAProxy does.
// asRoot adds "user root" so a root-run nginx does not switch its worker to
// nobody: the peers run as the current user, like the edge.
func NginxConfig(dir, listen, backend string, asRoot bool) string {
	var b strings.Builder
	b.WriteString("daemon off;\nmaster_process on;\nworker_processes 1;\n")
	if asRoot {
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, "pid %s;\nerror_log %s warn;\n", filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "nginx-error.log"))
	b.WriteString("events {\n    worker_connections 4096;\n}\n")
	b.WriteString("http {\n    access_log off;\n    keepalive_requests 1000000;\n")
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", t, filepath.Join(dir, "nginx-"+t))
	}
	fmt.Fprintf(&b, "    upstream backend {\n        server %s;\n        keepalive %d;\n        keepalive_requests 1000000;\n    }\n", backend, peerKeepalive)
	fmt.Fprintf(&b, "    server {\n        listen %s;\n", listen)
	b.WriteString("        location / {\n            proxy_pass http://backend;\n")
	b.WriteString("            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n")
	b.WriteString("            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n")
	b.WriteString("            proxy_set_header X-Forwarded-Proto $scheme;\n")
	b.WriteString("            proxy_set_header X-Forwarded-Host $http_host;\n")
	b.WriteString("            proxy_set_header X-Request-Id $pid-$connection-$connection_requests;\n")
	b.WriteString("            add_header X-Request-Id $pid-$connection-$connection_requests always;\n")
	b.WriteString("        }\n    }\n}\n")
	return b.String()
}

// HAProxyConfig returns a haproxy.cfg for one thread, no logging and
// upstream connection reuse, doing the edge's per-request work as
// NginxConfig does, its request id too a per-process part and a counter
// (%pid-%rt; a format of seven fields cost it ~4 % in printf). It runs in
// the foreground (-db), so it needs no pid file.
func HAProxyConfig(listen, backend string) string {
	return fmt.Sprintf(`global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend bench
    bind %s
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %%[req.hdr(host)]
    unique-id-format %%pid-%%rt
    unique-id-header X-Request-Id
    http-response set-header X-Request-Id %%[unique-id]
    default_backend backend

backend backend
    server b1 %s
`, listen, backend)
}

// peer is a competitor proxy to run: its name, how to start it, or why not.
type peer struct {
	name string
	bin  string
	args []string
	skip string // non-empty: not run, and why
}

// preparePeers writes the peer configs into dir and returns what to start.
func preparePeers(dir string, listen map[string]string, backend string) ([]peer, error) {
	var peers []peer
	if bin, err := exec.LookPath("nginx"); err != nil {
		peers = append(peers, peer{name: "nginx", skip: "nginx not installed (apt-get install -y nginx)"})
	} else {
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(NginxConfig(dir, listen["nginx"], backend, os.Geteuid() == 0)), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", conf, err)
		}
		peers = append(peers, peer{name: "nginx", bin: bin, args: []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "nginx-error.log")}})
	}
	if bin, err := exec.LookPath("haproxy"); err != nil {
		peers = append(peers, peer{name: "haproxy", skip: "haproxy not installed (apt-get install -y haproxy)"})
	} else {
		conf := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(conf, []byte(HAProxyConfig(listen["haproxy"], backend)), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", conf, err)
		}
		peers = append(peers, peer{name: "haproxy", bin: bin, args: []string{"-db", "-f", conf}})
	}
	return peers, nil
}
