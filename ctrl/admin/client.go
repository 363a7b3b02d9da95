package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// MaxReply bounds one reply line read by the Client. Lists grow with the
// configuration (a 10k-route list is a few MiB), so this is far above the
// request limit.
const MaxReply = 256 << 20

// Client talks to a ctrl admin socket. Calls on one Client are serialised;
// it is safe for concurrent use. After an I/O error (including a cancelled
// context mid-call) the connection is closed and every later call fails,
// because request and reply lines can no longer be paired up.
type Client struct {
	path string

	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	broken error
	buf    []byte
}

// Dial connects to the admin socket at path.
func Dial(path string) (*Client, error) {
	return DialContext(context.Background(), path)
}

// DialContext connects to the admin socket at path, giving up when ctx ends.
func DialContext(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, unwrapPath(err))
	}
	return &Client{path: path, conn: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = net.ErrClosed
	}
	return c.conn.Close()
}

// Call sends req and waits for its reply. The returned error covers
// transport problems only; a reply with OK false is returned as is (see the
// typed helpers, which turn it into an *Error).
func (c *Client) Call(ctx context.Context, req Request) (Reply, error) {
	if err := CheckRequest(req); err != nil {
		return Reply{}, err // the server would refuse it too; save the round trip
	}
	b, err := json.Marshal(req)
	if err != nil {
		return Reply{}, fmt.Errorf("admin: encoding %s request: %w", req.Cmd, err)
	}
	if len(b) > DefaultMaxLine { // the server's bound leaves out the '\n'
		// ctrl would refuse it and close the connection while this side
		// still writes, so the caller would see a broken pipe and could
		// not tell whether anything happened: nothing did.
		return Reply{}, Errorf(CodeBadRequest, "", "the %s request is %d bytes, above the admin socket's limit of %d bytes per request; nothing was sent", req.Cmd, len(b), DefaultMaxLine)
	}
	b = append(b, '\n')

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return Reply{}, fmt.Errorf("admin: %s: connection to %s unusable: %w", req.Cmd, c.path, c.broken)
	}
	if err := ctx.Err(); err != nil {
		return Reply{}, fmt.Errorf("admin: %s: %w", req.Cmd, err)
	}
	if err := c.conn.SetDeadline(time.Time{}); err != nil {
		return Reply{}, c.fail(ctx, req.Cmd, err)
	}
	// Cancellation (and the context's deadline) interrupts blocked I/O by
	// moving the connection's deadline to the past. AfterFunc runs only once
	// ctx is done, so fail can report ctx.Err() rather than a bare timeout.
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := c.conn.Write(b); err != nil {
		return Reply{}, c.fail(ctx, req.Cmd, err)
	}
	line, err := readLine(c.r, MaxReply, c.buf[:0])
	if err != nil {
		return Reply{}, c.fail(ctx, req.Cmd, err)
	}
	if cap(line) <= 1<<20 {
		c.buf = line
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return Reply{}, c.fail(ctx, req.Cmd, fmt.Errorf("malformed reply: %w", err))
	}
	return rep, nil
}

func (c *Client) fail(ctx context.Context, cmd string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	c.broken = err
	c.conn.Close()
	return fmt.Errorf("admin: %s via %s: %w", cmd, c.path, err)
}

// do runs req and decodes a successful result into out; a failed reply
// comes back as *Error.
func (c *Client) do(ctx context.Context, req Request, out any) error {
	rep, err := c.Call(ctx, req)
	if err != nil {
		return err
	}
	if !rep.OK {
		if rep.Error == nil {
			return Errorf(CodeInternal, "", "ctrl replied ok=false without an error")
		}
		return rep.Error
	}
	if err := json.Unmarshal(rep.Result, out); err != nil {
		return fmt.Errorf("admin: decoding %s result: %w", req.Cmd, err)
	}
	return nil
}

// PutRoute creates or replaces a route. expected: nil = no check,
// pointer to 0 = must not exist, pointer to n = current version must be n.
func (c *Client) PutRoute(ctx context.Context, r model.Route, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdRoutePut, Route: &r, ExpectedVersion: expected})
}

// GetRoute returns one route.
func (c *Client) GetRoute(ctx context.Context, id string) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdRouteGet, ID: id})
}

// ListRoutes returns every route, sorted by id.
func (c *Client) ListRoutes(ctx context.Context) (List, error) {
	return c.list(ctx, CmdRouteList)
}

// DeleteRoute deletes a route no policy is scoped to, optionally only at
// version *expected.
func (c *Client) DeleteRoute(ctx context.Context, id string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdRouteDelete, ID: id, ExpectedVersion: expected})
}

// PutCluster creates or replaces a cluster; expected as for PutRoute.
func (c *Client) PutCluster(ctx context.Context, cl model.Cluster, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdClusterPut, Cluster: &cl, ExpectedVersion: expected})
}

// GetCluster returns one cluster.
func (c *Client) GetCluster(ctx context.Context, id string) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdClusterGet, ID: id})
}

// ListClusters returns every cluster, sorted by id.
func (c *Client) ListClusters(ctx context.Context) (List, error) {
	return c.list(ctx, CmdClusterList)
}

// DeleteCluster deletes a cluster that no route or policy references.
func (c *Client) DeleteCluster(ctx context.Context, id string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdClusterDelete, ID: id, ExpectedVersion: expected})
}

// result runs req and returns its Result.
func (c *Client) result(ctx context.Context, req Request) (Result, error) {
	var res Result
	err := c.do(ctx, req, &res)
	return res, err
}

// list runs a list command.
func (c *Client) list(ctx context.Context, cmd string) (List, error) {
	var l List
	err := c.do(ctx, Request{Cmd: cmd}, &l)
	return l, err
}

// PutConsumer creates or replaces a consumer; expected as for PutRoute.
func (c *Client) PutConsumer(ctx context.Context, co model.Consumer, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdConsumerPut, Consumer: &co, ExpectedVersion: expected})
}

// GetConsumer returns one consumer, without password hashes.
func (c *Client) GetConsumer(ctx context.Context, id string) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdConsumerGet, ID: id})
}

// ListConsumers returns every consumer, sorted by id.
func (c *Client) ListConsumers(ctx context.Context) (List, error) {
	return c.list(ctx, CmdConsumerList)
}

// DeleteConsumer deletes a consumer.
func (c *Client) DeleteConsumer(ctx context.Context, id string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdConsumerDelete, ID: id, ExpectedVersion: expected})
}

// AddConsumerKey has ctrl generate an API key for consumer id; the key is
// in Result.APIKey, this once.
func (c *Client) AddConsumerKey(ctx context.Context, id, keyID string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdConsumerAddKey, ID: id, KeyID: keyID, ExpectedVersion: expected})
}

// RemoveConsumerKey removes API key keyID from consumer id.
func (c *Client) RemoveConsumerKey(ctx context.Context, id, keyID string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdConsumerRemoveKey, ID: id, KeyID: keyID, ExpectedVersion: expected})
}

// SetConsumerPassword sets the basic-auth password hash (model.HashPassword)
// of username on consumer id, adding the username if it is new.
func (c *Client) SetConsumerPassword(ctx context.Context, id, username, passwordHash string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdConsumerSetPassword, ID: id, Username: username, PasswordHash: passwordHash, ExpectedVersion: expected})
}

// PutJWTIssuer creates or replaces a JWT issuer; expected as for PutRoute.
func (c *Client) PutJWTIssuer(ctx context.Context, j model.JWTIssuer, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdJWTIssuerPut, JWTIssuer: &j, ExpectedVersion: expected})
}

// GetJWTIssuer returns one issuer, without HMAC keys.
func (c *Client) GetJWTIssuer(ctx context.Context, id string) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdJWTIssuerGet, ID: id})
}

// ListJWTIssuers returns every issuer, sorted by id.
func (c *Client) ListJWTIssuers(ctx context.Context) (List, error) {
	return c.list(ctx, CmdJWTIssuerList)
}

// DeleteJWTIssuer deletes an issuer that no consumer or policy references.
func (c *Client) DeleteJWTIssuer(ctx context.Context, id string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdJWTIssuerDelete, ID: id, ExpectedVersion: expected})
}

// PutPolicy creates or replaces a policy; expected as for PutRoute.
func (c *Client) PutPolicy(ctx context.Context, p model.Policy, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdPolicyPut, Policy: &p, ExpectedVersion: expected})
}

// GetPolicy returns one policy.
func (c *Client) GetPolicy(ctx context.Context, id string) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdPolicyGet, ID: id})
}

// ListPolicies returns every policy, sorted by id.
func (c *Client) ListPolicies(ctx context.Context) (List, error) {
	return c.list(ctx, CmdPolicyList)
}

// DeletePolicy deletes a policy.
func (c *Client) DeletePolicy(ctx context.Context, id string, expected *uint64) (Result, error) {
	return c.result(ctx, Request{Cmd: CmdPolicyDelete, ID: id, ExpectedVersion: expected})
}

// Status returns the control plane's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, Request{Cmd: CmdStatus}, &st)
	return st, err
}

// ForgetEdge removes the disconnected edge nodeID from ctrl's status and
// store, and returns it as it was last listed.
func (c *Client) ForgetEdge(ctx context.Context, nodeID string) (EdgeStatus, error) {
	var e EdgeStatus
	err := c.do(ctx, Request{Cmd: CmdEdgeForget, NodeID: nodeID}, &e)
	return e, err
}

// ReportHealth sends an external checker's report; it returns once ctrl
// has made the endpoint's state durable, or with ctx's error.
func (c *Client) ReportHealth(ctx context.Context, r HealthReport) (HealthReportResult, error) {
	var res HealthReportResult
	err := c.do(ctx, Request{Cmd: CmdHealthReport, Report: &r}, &res)
	return res, err
}

// HealthStatus returns the health of every cluster ("") or of one.
func (c *Client) HealthStatus(ctx context.Context, cluster string) (HealthStatus, error) {
	var st HealthStatus
	err := c.do(ctx, Request{Cmd: CmdHealthStatus, ID: cluster}, &st)
	return st, err
}

// ExplainHealth explains an endpoint's state in cluster, or in every
// cluster that has it ("").
func (c *Client) ExplainHealth(ctx context.Context, cluster, endpoint string) (string, error) {
	var ex HealthExplanation
	err := c.do(ctx, Request{Cmd: CmdHealthExplain, ID: cluster, Endpoint: endpoint}, &ex)
	return ex.Text, err
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
