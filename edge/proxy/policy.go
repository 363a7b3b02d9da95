package proxy

import (
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/auth"
	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/edge/ratelimit"
	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/telemetry"
	"github.com/snapgate/snapgate/fbs"
)

// Policies (docs/auth.md). The route must be matched first, since its
// policy is what applies: the route's own, else its cluster's, else the
// global one, whole. That policy then authenticates the request, checks
// its ACL and takes a token from each of its rate limits, in that order,
// before the body is read. Because the policy comes from the route the
// request is forwarded to, matched on the normalised path and host the
// upstream also receives, no other spelling of a request can reach a
// protected route without its policy.
//
// A pass decides what goes upstream (appendRequestHead): the consumer id
// in the policy's header, the credential field removed unless the policy
// keeps it, and never a client's own copy of the consumer header.
// Requests on routes without a policy skip all of it.

// requestPolicy is what the policy decided for the request in flight.
type requestPolicy struct {
	// consumerHeaders are the snapshot's consumer headers besides the
	// default one; client copies never go upstream (Table.ConsumerHeaders).
	consumerHeaders [][]byte
	p               *routing.Policy // nil: the route has no policy
	consumer        string          // authenticated consumer id; "" anonymous
	// credential is the lowercase name of the field that carried the
	// credential, removed upstream; nil when kept or absent.
	credential []byte
	// auth is the table that authenticated the request (policy p's
	// AuthIndex), nil without authentication: ForbidsTrailer asks it.
	auth    *auth.Table
	refusal refusal
}

// refusal is a policy's answer instead of forwarding.
type refusal struct {
	code      string // the JSON "error": unauthorized, forbidden, rate_limited; "" = none
	challenge string // WWW-Authenticate of a 401
	limit     *routing.Limit
	wait      time.Duration // until the limit would admit the request
}

// JSON error codes of policy refusals.
const (
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
	codeRateLimited  = "rate_limited"
	reasonRateLimit  = "rate limit exceeded"
)

// enforcePolicy applies the matched route's policy. It reports false when
// the policy refuses the request; refusePolicy then answers it.
func (s *Server) enforcePolicy(st *connState, tab *routing.Table) bool {
	st.pol.consumerHeaders = tab.ConsumerHeaders()
	pi := tab.PolicyFor(&st.match)
	if pi < 0 {
		return true
	}
	p := tab.Policy(pi)
	st.pol.p = p
	pc := s.policyCounters(tab, pi)
	now := time.Now()
	if p.AuthIndex >= 0 {
		d := &st.authDecision
		tab.Auth().Authenticate(p.AuthIndex, (*credentialFields)(st), now, d)
		if d.Status != 0 {
			s.refuseAuth(st, pc, d)
			return false
		}
		st.pol.consumer = d.ConsumerID
		st.pol.auth = tab.Auth()
		if !p.KeepCredentials {
			st.pol.credential = d.Credential
		}
	}
	for i := range p.Limits {
		l := &p.Limits[i]
		// A request refused by a later limit keeps the tokens it took
		// from earlier ones: stricter, never looser, and no refund race.
		ok, wait, _ := s.limits.Allow(l.Limit, limitKey(st, l), now)
		if !ok {
			pc.Observe(telemetry.OutcomeRateLimited)
			st.pol.refusal = refusal{code: codeRateLimited, limit: l, wait: wait}
			st.retryAfter = ratelimit.RetryAfterSeconds(wait)
			return false
		}
	}
	pc.Observe(telemetry.OutcomeOK)
	return true
}

func (s *Server) refuseAuth(st *connState, pc *telemetry.PolicyCounters, d *auth.Decision) {
	switch d.Status {
	case 401:
		pc.Observe(telemetry.OutcomeUnauthorized)
		st.pol.refusal = refusal{code: codeUnauthorized, challenge: d.Challenge}
		return
	case 429: // the password-check budget is spent
		pc.Observe(telemetry.OutcomeRateLimited)
		st.pol.refusal = refusal{code: codeRateLimited, wait: d.RetryAfter}
		st.retryAfter = ratelimit.RetryAfterSeconds(d.RetryAfter)
		return
	}
	// 403, and anything else auth might say: fail closed.
	pc.Observe(telemetry.OutcomeForbidden)
	st.pol.refusal = refusal{code: codeForbidden}
}

// refusePolicy answers the refusal enforcePolicy recorded, before the
// body was read (keep-alive survives when the body can be skipped).
func (s *Server) refusePolicy(st *connState, hn int) bool {
	switch st.pol.refusal.code {
	case codeUnauthorized:
		return s.failBeforeBody(st, hn, telemetry.CauseUnauthorized, 401, st.authDecision.Reason)
	case codeRateLimited:
		reason := reasonRateLimit
		if st.pol.refusal.limit == nil {
			reason = st.authDecision.Reason
		}
		return s.failBeforeBody(st, hn, telemetry.CauseRateLimited, 429, reason)
	}
	return s.failBeforeBody(st, hn, telemetry.CauseForbidden, 403, st.authDecision.Reason)
}

// limitKey builds the bucket key of limit l into the connection's scratch
// buffer, prefixed by its kind so a consumer id never shares a bucket
// with an address or a header value of the same spelling. Anonymous
// requests are keyed by client address for consumer limits, and so are
// requests without the header of a header limit (or with it twice): one
// client leaving the header out cannot exhaust a bucket every such client
// shares. The client address is the TCP peer's; X-Forwarded-For is not
// trusted.
func limitKey(st *connState, l *routing.Limit) []byte {
	b := st.limitBuf[:0]
	switch l.Key {
	case fbs.LimitByConsumer:
		if st.pol.consumer != "" {
			b = append(append(b, 'c'), st.pol.consumer...)
			break
		}
		b = append(append(b, 'i'), st.clientIP...)
	case fbs.LimitByRoute:
		b = append(append(b, 'r'), st.match.ID()...)
	case fbs.LimitByHeader:
		// Read as auth reads credentials: in any spelling, and a header
		// sent twice counts as not sent, since the backend may read the
		// other copy (junk values then a victim's would each get a fresh
		// bucket while the backend serves the victim).
		if v, ok := (*credentialFields)(st).Header(l.Header); ok && v != nil {
			b = append(append(b, 'h'), v...)
			break
		}
		b = append(append(b, 'i'), st.clientIP...)
	default: // fbs.LimitByIP
		b = append(append(b, 'i'), st.clientIP...)
	}
	st.limitBuf = b // grows to the longest key on the connection, then reused
	return b
}

// credentialFields is the request's fields as auth reads them: like
// connState.Header, except that a field sent more than once reads as
// present and empty, which auth refuses with 401. Which copy of a
// duplicated credential the upstream would read is ambiguous (P1).
type credentialFields connState

func (c *credentialFields) Header(name []byte) ([]byte, bool) {
	var v []byte
	found := false
	for _, f := range c.req.Fields() {
		if h1.NameIs(f.Name, name) {
			if found {
				return nil, true
			}
			v, found = f.Value, true
		}
	}
	return v, found
}

// stripsField reports whether a client field must not go upstream: any
// policy's consumer header (only the edge sets them) and, under the
// request's policy, the credential field unless kept.
func (rp *requestPolicy) stripsField(name []byte) bool {
	for _, h := range rp.consumerHeaders {
		if h1.NameIs(name, h) {
			return true
		}
	}
	return rp.credential != nil && h1.NameIs(name, rp.credential)
}

// ForbidsTrailer keeps out of a chunked body's trailer (h1.TrailerFilter)
// what stripsField keeps out of the head, and every field the policy reads
// a credential from, kept or not: a backend that merges trailers into the
// header section would take a client's copy for the edge's, or see a
// second credential the edge never checked (in the head, a 401).
func (rp *requestPolicy) ForbidsTrailer(name []byte) bool {
	return rp.stripsField(name) || (rp.auth != nil && rp.auth.CredentialField(rp.p.AuthIndex, name))
}

// appendConsumer adds the consumer header to an upstream head.
func (rp *requestPolicy) appendConsumer(w []byte) []byte {
	if rp.consumer == "" {
		return w
	}
	w = append(w, rp.p.ConsumerHeader...)
	w = append(w, ": "...)
	w = append(w, rp.consumer...)
	return append(w, "\r\n"...)
}

// isConsumerIDField matches the default consumer header, which no client
// may send upstream even on routes without a policy: a backend behind
// protected and open routes alike must be able to trust it.
func isConsumerIDField(name []byte) bool {
	return h1.NameIs(name, routing.DefaultConsumerHeader)
}

// refusalBody is the content type and length of the error body: the
// JSON {"error":<code>,"reason":<reason>} for policy refusals (codes and
// reasons are fixed phrases, never a credential, and need no escaping).
func (rp *requestPolicy) refusalBody(reason string) (contentType string, n int) {
	return "application/json", len(`{"error":"","reason":""}`) + len(rp.refusal.code) + len(reason)
}

func (rp *requestPolicy) writeRefusalBody(w netpoll.Writer, reason string) {
	w.WriteString(`{"error":"`)
	w.WriteString(rp.refusal.code)
	w.WriteString(`","reason":"`)
	w.WriteString(reason)
	w.WriteString(`"}`)
}

// writeRefusalFields writes WWW-Authenticate for a 401, and for a 429 the
// limit's RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers-09).
func (s *Server) writeRefusalFields(st *connState, w netpoll.Writer) {
	r := &st.pol.refusal
	if r.challenge != "" {
		w.WriteString("WWW-Authenticate: ")
		w.WriteString(r.challenge)
		w.WriteString("\r\n")
	}
	if r.limit != nil {
		w.WriteString("RateLimit-Policy: ")
		w.WriteString(r.limit.Policy)
		w.WriteString("\r\nRateLimit: ")
		st.limitBuf = r.limit.RateLimit(st.limitBuf[:0], 0, r.wait)
		w.WriteBinary(st.limitBuf)
		w.WriteString("\r\n")
	}
}

// policyIndex holds the decision counters of every policy of one table,
// by policy index, so a request never looks a policy up by name.
type policyIndex struct {
	tab *routing.Table // compared, never dereferenced after it retired
	pcs []*telemetry.PolicyCounters
}

// policyCounters returns policy pi's counters from the index built for
// the table in service at swap (indexTable); a policy's series carry over
// swaps by policy id.
func (s *Server) policyCounters(tab *routing.Table, pi int) *telemetry.PolicyCounters {
	if px := s.policyIdx.Load(); px != nil && px.tab == tab {
		return px.pcs[pi]
	}
	// A request still finishing on a table no longer in service.
	return s.metrics.Policy(tab.Policy(pi).ID)
}
