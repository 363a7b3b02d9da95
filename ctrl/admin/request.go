package admin

import (
	"github.com/snapgate/snapgate/ctrl/model"
)

// argument sets per command: which of id, route, cluster and
// expected_version a command takes. Anything else present is an error, so
// that e.g. `{"cmd":"route.delete","route":{...}}` (no id) is not mistaken
// for something it is not.
type args struct {
	id, route, cluster, expected bool
}

var commands = map[string]args{
	CmdRoutePut:      {route: true, expected: true},
	CmdRouteGet:      {id: true},
	CmdRouteList:     {},
	CmdRouteDelete:   {id: true, expected: true},
	CmdClusterPut:    {cluster: true, expected: true},
	CmdClusterGet:    {id: true},
	CmdClusterList:   {},
	CmdClusterDelete: {id: true, expected: true},
	CmdStatus:        {},
}

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
	a, ok := commands[req.Cmd]
	if !ok {
		return Errorf(CodeBadRequest, "cmd", "unknown command %q; known: route.put, route.get, route.list, route.delete, cluster.put, cluster.get, cluster.list, cluster.delete, status", req.Cmd)
	}
	switch {
	case a.id && req.ID == "":
		return Errorf(CodeBadRequest, "id", "required by %s", req.Cmd)
	case a.id && !model.ValidID(req.ID):
		return Errorf(CodeBadRequest, "id", "%q is not a valid id: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters", req.ID)
	case !a.id && req.ID != "":
		return Errorf(CodeBadRequest, "id", "not used by %s%s", req.Cmd, idHint(req.Cmd))
	case a.route && req.Route == nil:
		return Errorf(CodeBadRequest, "route", "required by %s", req.Cmd)
	case !a.route && req.Route != nil:
		return Errorf(CodeBadRequest, "route", "not used by %s", req.Cmd)
	case a.cluster && req.Cluster == nil:
		return Errorf(CodeBadRequest, "cluster", "required by %s", req.Cmd)
	case !a.cluster && req.Cluster != nil:
		return Errorf(CodeBadRequest, "cluster", "not used by %s", req.Cmd)
	case !a.expected && req.ExpectedVersion != nil:
		return Errorf(CodeBadRequest, "expected_version", "not used by %s", req.Cmd)
	}
	return nil
}

func idHint(cmd string) string {
	switch cmd {
	case CmdRoutePut:
		return " (the id is route.id)"
	case CmdClusterPut:
		return " (the id is cluster.id)"
	}
	return ""
}
