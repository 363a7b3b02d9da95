package admin

import (
	"maps"
	"slices"
	"strings"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/wire"
)

// arg is one optional member of a Request besides cmd.
type arg uint16

const (
	argID arg = 1 << iota
	argRoute
	argCluster
	argConsumer
	argJWTIssuer
	argPolicy
	argKeyID
	argUsername
	argPasswordHash
	argExpected
	argReport
	argEndpoint
	argNodeID
	argKeepCredentials
)

// members lists the arguments in the order CheckRequest reports them, with
// their JSON names and whether a request carries them.
var members = []struct {
	a       arg
	name    string
	present func(*Request) bool
}{
	{argID, "id", func(r *Request) bool { return r.ID != "" }},
	{argRoute, "route", func(r *Request) bool { return r.Route != nil }},
	{argCluster, "cluster", func(r *Request) bool { return r.Cluster != nil }},
	{argConsumer, "consumer", func(r *Request) bool { return r.Consumer != nil }},
	{argJWTIssuer, "jwt_issuer", func(r *Request) bool { return r.JWTIssuer != nil }},
	{argPolicy, "policy", func(r *Request) bool { return r.Policy != nil }},
	{argKeyID, "key_id", func(r *Request) bool { return r.KeyID != "" }},
	{argUsername, "username", func(r *Request) bool { return r.Username != "" }},
	{argPasswordHash, "password_hash", func(r *Request) bool { return r.PasswordHash != "" }},
	{argExpected, "expected_version", func(r *Request) bool { return r.ExpectedVersion != nil }},
	{argReport, "report", func(r *Request) bool { return r.Report != nil }},
	{argEndpoint, "endpoint", func(r *Request) bool { return r.Endpoint != "" }},
	{argNodeID, "node_id", func(r *Request) bool { return r.NodeID != "" }},
	{argKeepCredentials, "keep_credentials", func(r *Request) bool { return r.KeepCredentials }},
}

// shape is what one command takes: required and optional arguments.
// Anything else present is an error, so that e.g.
// `{"cmd":"route.delete","route":{...}}` (no id) is not mistaken for
// something it is not.
type shape struct{ required, optional arg }

var commands = map[string]shape{
	CmdRoutePut:            {required: argRoute, optional: argExpected},
	CmdRouteGet:            {required: argID},
	CmdRouteList:           {},
	CmdRouteDelete:         {required: argID, optional: argExpected},
	CmdClusterPut:          {required: argCluster, optional: argExpected},
	CmdClusterGet:          {required: argID},
	CmdClusterList:         {},
	CmdClusterDelete:       {required: argID, optional: argExpected},
	CmdConsumerPut:         {required: argConsumer, optional: argExpected | argKeepCredentials},
	CmdConsumerGet:         {required: argID},
	CmdConsumerList:        {},
	CmdConsumerDelete:      {required: argID, optional: argExpected},
	CmdConsumerAddKey:      {required: argID, optional: argKeyID | argExpected},
	CmdConsumerRemoveKey:   {required: argID | argKeyID, optional: argExpected},
	CmdConsumerSetPassword: {required: argID | argUsername | argPasswordHash, optional: argExpected},
	CmdJWTIssuerPut:        {required: argJWTIssuer, optional: argExpected},
	CmdJWTIssuerGet:        {required: argID},
	CmdJWTIssuerList:       {},
	CmdJWTIssuerDelete:     {required: argID, optional: argExpected},
	CmdPolicyPut:           {required: argPolicy, optional: argExpected},
	CmdPolicyGet:           {required: argID},
	CmdPolicyList:          {},
	CmdPolicyDelete:        {required: argID, optional: argExpected},
	CmdHealthReport:        {required: argReport},
	CmdHealthStatus:        {optional: argID},
	CmdHealthExplain:       {required: argEndpoint, optional: argID},
	CmdStatus:              {},
	CmdEdgeForget:          {required: argNodeID},
}

// knownCommands is the list an unknown command's error shows.
var knownCommands = strings.Join(slices.Sorted(maps.Keys(commands)), ", ")

// DecodeRequest parses and checks the shape of one request line (without
// its newline). It does not validate documents; that is the Handler's job,
// so document problems are reported with code "invalid" and all at once.
func DecodeRequest(line []byte) (Request, *Error) {
	var req Request
	if err := model.DecodeStrict(line, &req); err != nil {
		fe, _ := model.First(err)
		return Request{}, &Error{Code: CodeBadRequest, Field: fe.Field, Message: fe.Reason}
	}
	if err := CheckRequest(req); err != nil {
		return Request{}, err
	}
	return req, nil
}

// CheckRequest checks that req names a known command and carries exactly the
// arguments that command takes.
func CheckRequest(req Request) *Error {
	if req.Cmd == "" {
		return Errorf(CodeBadRequest, "cmd", "required")
	}
	sh, ok := commands[req.Cmd]
	if !ok {
		return Errorf(CodeBadRequest, "cmd", "unknown command %q; known: %s", req.Cmd, knownCommands)
	}
	for _, m := range members {
		has := m.present(&req)
		switch {
		case sh.required&m.a != 0 && !has:
			return Errorf(CodeBadRequest, m.name, "required by %s", req.Cmd)
		case (sh.required|sh.optional)&m.a == 0 && has:
			msg := "not used by " + req.Cmd
			if m.a == argID {
				msg += idHint(req.Cmd)
			}
			return Errorf(CodeBadRequest, m.name, "%s", msg)
		}
	}
	ids := []struct{ field, value string }{{"id", req.ID}, {"key_id", req.KeyID}}
	if req.Report != nil {
		ids = append(ids, struct{ field, value string }{"report.cluster", req.Report.Cluster})
	}
	for _, id := range ids {
		if id.value != "" {
			if err := CheckID(id.field, id.value); err != nil {
				return err
			}
		}
	}
	if req.NodeID != "" && wire.ValidNodeID(req.NodeID) != nil {
		return Errorf(CodeBadRequest, "node_id", "%.40q is not a valid node id: an edge's --node-id is 1 to %d bytes of visible ASCII", req.NodeID, wire.MaxNodeID)
	}
	if req.KeepCredentials {
		if c := req.Consumer.Credentials; len(c.APIKeys)+len(c.JWT)+len(c.Basic) > 0 {
			return Errorf(CodeBadRequest, "consumer.credentials", "must be empty with keep_credentials, which keeps the stored ones")
		}
	}
	if r := req.Report; r != nil {
		return r.check()
	}
	return nil
}

// check validates the shape of a health report; whether its cluster and
// endpoint exist is ctrl's to say.
func (r *HealthReport) check() *Error {
	switch {
	case r.Cluster == "":
		return Errorf(CodeBadRequest, "report.cluster", "required")
	case r.Endpoint == "":
		return Errorf(CodeBadRequest, "report.endpoint", "required: the endpoint's host:port as in the cluster")
	case r.State != StateHealthy && r.State != StateUnhealthy:
		return Errorf(CodeBadRequest, "report.state", "want %q or %q, got %.40q", StateHealthy, StateUnhealthy, r.State)
	case r.Revision == 0:
		return Errorf(CodeBadRequest, "report.revision", "required and at least 1: the checker's own increasing counter or timestamp")
	}
	return nil
}

// idHint says where the id lives instead: a put's document carries it, an
// edge is named by node_id.
func idHint(cmd string) string {
	if kind, ok := strings.CutSuffix(cmd, ".put"); ok {
		return " (the id is " + kind + ".id)"
	}
	if cmd == CmdEdgeForget {
		return " (an edge is named by node_id)"
	}
	return ""
}

// CheckID refuses a document id that model.ValidID refuses, naming field.
func CheckID(field, id string) *Error {
	if model.ValidID(id) {
		return nil
	}
	return Errorf(CodeBadRequest, field, "%q is not a valid id: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters", id)
}
