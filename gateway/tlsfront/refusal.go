package tlsfront

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Why a connection the gateway admitted never reached Adopt. The error
// Refused receives wraps one of these (test with errors.Is), or is the
// TLS error itself; Classify turns either into a reason.
var (
	// ErrHandshakeTimeout: the TLS handshake did not complete within
	// Options.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("TLS handshake not complete in time")
	// ErrHandshakeTooLarge: the client sent more than
	// Options.HandshakeMaxBytes before the handshake completed.
	ErrHandshakeTooLarge = errors.New("TLS handshake too large")
	// ErrPlainHTTP: the client spoke plain HTTP to the TLS port; it was
	// answered HTTP 400.
	ErrPlainHTTP = errors.New("plain HTTP request on the TLS port")
	// ErrClientAlert: the client aborted the handshake with a TLS alert
	// (most often: it does not accept our certificate).
	ErrClientAlert = errors.New("the client aborted the TLS handshake")
	// ErrClientGone: the client closed or reset the connection during the
	// handshake (a TCP health check, a client giving up).
	ErrClientGone = errors.New("the client hung up during the TLS handshake")
	// ErrTooManyHandshakes: Options.MaxHandshakes handshakes were in
	// progress; the connection was reset without one.
	ErrTooManyHandshakes = errors.New("TLS handshakes in progress at their limit")
	// ErrNoDescriptors: no socket pair could be made for the connection.
	ErrNoDescriptors = errors.New("no descriptors for the connection's socket pair")
	// ErrClosed: the front is shutting down.
	ErrClosed = errors.New("TLS front closed")
)

// Refusal is how the gateway records a connection that did not reach
// Adopt: the reason of its audit line (which also weighs its strike) and
// the line's detail. Audit says whether it deserves a line at all: a
// client hanging up during the handshake does not (like a plain client
// hanging up during its HTTP request).
type Refusal struct {
	Reason reason.Reason
	Detail string
	Audit  bool
}

// maxDetail caps a refusal's detail; TLS errors can list what the client
// offered.
const maxDetail = 200

// Classify maps an error given to Options.Refused to its refusal:
//
//	ErrHandshakeTimeout   handshake_timeout    weight 1
//	ErrHandshakeTooLarge  handshake_too_large  weight 2
//	ErrPlainHTTP, a TLS protocol error (no common version, suite or ALPN; not TLS)
//	                      tls_handshake        weight 1
//	ErrClientAlert        tls_client_alert     weight 0
//	ErrTooManyHandshakes  global_connections   weight 0
//	ErrNoDescriptors      fd_exhausted         weight 0
//	ErrClosed             shutting_down        weight 0, not audited
//	ErrClientGone         client_closed        weight 0, not audited
func Classify(err error) Refusal {
	var r reason.Reason
	audit := true
	switch {
	case errors.Is(err, ErrHandshakeTimeout):
		r = reason.HandshakeTimeout
	case errors.Is(err, ErrHandshakeTooLarge):
		r = reason.HandshakeTooLarge
	case errors.Is(err, ErrClientAlert):
		r = reason.TLSClientAlert
	case errors.Is(err, ErrTooManyHandshakes):
		r = reason.GlobalConnections
	case errors.Is(err, ErrNoDescriptors):
		r = reason.FDExhausted
	case errors.Is(err, ErrClosed):
		r, audit = reason.ShuttingDown, false
	case errors.Is(err, ErrClientGone):
		r, audit = reason.ClientClosed, false
	default: // ErrPlainHTTP and every other TLS error
		r = reason.TLSHandshake
	}
	d := err.Error()
	if len(d) > maxDetail {
		d = d[:maxDetail]
	}
	return Refusal{Reason: r, Detail: d, Audit: audit}
}

// handshakeError names why Handshake failed on conn lc, wrapping one of
// the errors above where one applies. closing says the front is shutting
// down (its deadlines were moved to the past).
func handshakeError(err error, lc *recordConn, closing bool) error {
	var opErr *net.OpError
	var ne net.Error
	var rhe tls.RecordHeaderError
	switch {
	case lc.overLimit:
		return ErrHandshakeTooLarge
	case closing:
		return ErrClosed
	case errors.As(err, &ne) && ne.Timeout():
		return ErrHandshakeTimeout
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return &wrapped{kind: ErrClientAlert, err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return ErrClientGone
	case errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader):
		return ErrPlainHTTP
	}
	return err
}

// wrapped is a sentinel with the TLS error that caused it: Is matches the
// sentinel, Error reads like the TLS error.
type wrapped struct {
	kind error
	err  error
}

func (w *wrapped) Error() string        { return w.kind.Error() + ": " + w.err.Error() }
func (w *wrapped) Is(target error) bool { return target == w.kind }
func (w *wrapped) Unwrap() error        { return w.err }

// looksLikeHTTP reports whether a would-be TLS record header is the start
// of an HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE", "TRACE":
		return true
	}
	return false
}
