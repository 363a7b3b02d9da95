package h1

import "strconv"

// Error is a parse failure with the HTTP status the server should answer
// with. Reason is a short, fixed phrase safe to send to the client. Every
// Error means the framing can no longer be trusted: answer, then close.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string {
	return "h1: " + strconv.Itoa(e.Status) + " " + e.Reason
}

// The errors are preallocated so that rejecting input does not allocate
// either; a flood of bad requests must not turn into GC pressure.
var (
	errBareLF          = &Error{400, "bare LF"}
	errBareCR          = &Error{400, "bare CR"}
	errRequestLine     = &Error{400, "malformed request line"}
	errMethod          = &Error{400, "invalid method"}
	errUnknownMethod   = &Error{501, "unknown method"}
	errConnect         = &Error{400, "CONNECT not supported"}
	errTarget          = &Error{400, "bad request-target"}
	errUserinfo        = &Error{400, "userinfo in request-target"}
	errVersion         = &Error{400, "malformed HTTP version"}
	errVersionUnsupp   = &Error{505, "HTTP version not supported"}
	errRequestLineLong = &Error{414, "request line too long"}
	errHeadTooLarge    = &Error{431, "request header too large"}
	errTooManyHeaders  = &Error{431, "too many header fields"}
	errObsFold         = &Error{400, "obs-fold or leading whitespace in header"}
	errHeaderName      = &Error{400, "invalid header name"}
	errSpaceBeforeCol  = &Error{400, "whitespace before colon"}
	errSuspiciousName  = &Error{400, "look-alike of a framing header"}
	errHeaderValue     = &Error{400, "invalid character in header value"}
	errNoColon         = &Error{400, "header line without colon"}
	errHostMissing     = &Error{400, "missing Host"}
	errHostMultiple    = &Error{400, "multiple Host"}
	errHostInvalid     = &Error{400, "invalid Host"}
	errCLInvalid       = &Error{400, "invalid Content-Length"}
	errCLDuplicate     = &Error{400, "duplicate Content-Length"}
	errTEInvalid       = &Error{400, "invalid Transfer-Encoding"}
	errTEChunkedTwice  = &Error{400, "chunked applied twice"}
	errTENotFinal      = &Error{400, "chunked is not the final transfer coding"}
	errTEUnsupported   = &Error{501, "unsupported transfer coding"}
	errTEAndCL         = &Error{400, "both Transfer-Encoding and Content-Length"}
	errTEHTTP10        = &Error{400, "Transfer-Encoding in HTTP/1.0"}
	errBodyNotAllowed  = &Error{400, "body not allowed for method"}
	errConnMultiple    = &Error{400, "multiple Connection"}
	errExpectation     = &Error{417, "unsupported expectation"}
	errStatusLine      = &Error{502, "malformed status line"}
	errRespHeader      = &Error{502, "malformed response header"}
	errRespTooLarge    = &Error{502, "response header too large"}
	errRespFraming     = &Error{502, "ambiguous response framing"}
	errRespVersion     = &Error{502, "unsupported response version"}
	errChunkSize       = &Error{400, "bad chunk size"}
	errChunkExt        = &Error{400, "bad chunk extension"}
	errChunkCRLF       = &Error{400, "chunk not terminated by CRLF"}
	errChunkLineLong   = &Error{400, "chunk header too long"}
	errTrailer         = &Error{400, "bad trailer field"}
	errTrailerField    = &Error{400, "field not allowed in trailer"}
	errTrailerLarge    = &Error{431, "trailer section too large"}
)
