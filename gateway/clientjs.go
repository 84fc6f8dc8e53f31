package gateway

import (
	"bytes"
	"strconv"

	jsclient "github.com/portcullis-gw/portcullis/clients/js"
)

// clientJSPath is where the public listener serves the browser client,
// portcullis.js (clients/js, docs/CLIENT.md). Nothing else is served
// under that name: other methods and paths below it are upgrade requests
// like any other, refused as such.
const clientJSPath = "/" + jsclient.Name

// The three answers to /portcullis.js, built once. The file is public and
// immutable for the life of the binary: cacheable for an hour by anyone,
// revalidated by its ETag (its SRI hash), never sniffed, and readable by
// pages of any origin, since a module script (and any script with an
// integrity attribute) is fetched with CORS and carries no credentials.
// The whole answer is written at once into the socket's send buffer
// (SO_SNDBUF, 64 KiB), which it fits well below (a test checks).
var (
	clientJSHeaders = "Cache-Control: public, max-age=3600\r\nETag: " + jsclient.ETag() +
		"\r\nX-Content-Type-Options: nosniff\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n"
	clientJSHead = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/javascript; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(jsclient.Source())) + "\r\n" + clientJSHeaders + "\r\n")
	clientJSFull        = append(append([]byte(nil), clientJSHead...), jsclient.Source()...)
	clientJSNotModified = []byte("HTTP/1.1 304 Not Modified\r\n" + clientJSHeaders + "\r\n")
	clientJSETag        = []byte(jsclient.ETag())
)

// clientJSResponse is the answer to GET (head false) or HEAD of
// /portcullis.js with the complete request req: 304 when its
// If-None-Match names the file's ETag (or *), else 200 with the file (or,
// for HEAD, its headers alone).
func clientJSResponse(head bool, req []byte) []byte {
	switch {
	case ifNoneMatch(req, clientJSETag):
		return clientJSNotModified
	case head:
		return clientJSHead
	}
	return clientJSFull
}

var (
	crlf            = []byte("\r\n")
	ifNoneMatchName = []byte("If-None-Match")
)

// ifNoneMatch reports whether an If-None-Match field of the complete
// request req lists etag or is "*". Comparison is weak (RFC 9110 13.1.2):
// a W/ prefix is ignored. Several fields are one list.
func ifNoneMatch(req, etag []byte) bool {
	_, rest, _ := bytes.Cut(req, crlf) // the request line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, crlf)
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.EqualFold(name, ifNoneMatchName) {
			continue
		}
		for len(value) > 0 {
			var tag []byte
			tag, value, _ = bytes.Cut(value, []byte(","))
			tag = bytes.TrimSpace(tag)
			if bytes.Equal(tag, []byte("*")) {
				return true
			}
			if bytes.Equal(bytes.TrimPrefix(tag, []byte("W/")), etag) {
				return true
			}
		}
	}
	return false
}
