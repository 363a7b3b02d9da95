package ctrl

import (
	"errors"
	"fmt"
	"net"
)

// listenTCP binds addr for what ("stream listener") and says what failed,
// where and why once: net's own error repeats the address
// ("listen tcp 127.0.0.1:7400: bind: address already in use").
func listenTCP(what, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var ae *net.AddrError
	if errors.As(err, &ae) {
		err = errors.New(ae.Err)
	}
	return nil, fmt.Errorf("%s %s: %w", what, addr, err)
}
