// Package jsclient holds portcullis.js, the browser client of the native
// protocol, embedded in the binary so that the gateway can serve it at
// /portcullis.js on its public port (docs/CLIENT.md), with the Subresource
// Integrity string a page pins it with (`portcullis version --client-sri`).
//
// The file is a dependency-free ES module; this package only carries its
// bytes and their hashes: jsclient imports nothing from the project.
package jsclient

import (
	"crypto/sha512"
	_ "embed" // the client file
	"encoding/base64"
)

// Name is the file's name, and the path it is served at is "/" + Name.
const Name = "portcullis.js"

//go:embed portcullis.js
var source []byte

var integrity = func() string {
	sum := sha512.Sum384(source)
	return "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
}()

// Source returns the bytes of portcullis.js. The slice is shared: callers
// must not modify it.
func Source() []byte { return source }

// Integrity returns the Subresource Integrity string of portcullis.js:
// "sha384-" and the base64 of its SHA-384, as a page puts it in an
// integrity attribute or an import map.
func Integrity() string { return integrity }

// ETag returns the entity tag the file is served with: its integrity
// string, quoted. It changes exactly when the file does.
func ETag() string { return `"` + integrity + `"` }
