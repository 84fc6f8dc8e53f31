package chain

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Checkpoint is a signed statement that a writer (boot) had made the trail
// durable up to line Seq whose mac is MAC, having written Count lines since
// it started. One is written every minute, also when idle, and on close, to
// CheckpointsName in the audit directory and optionally to a second
// (off-host) directory: a trail that stopped, was truncated or was rewritten
// with the HMAC key no longer matches the checkpoints, which need the
// private Ed25519 key to forge.
type Checkpoint struct {
	Time  time.Time `json:"time"`
	Node  string    `json:"node,omitempty"`
	Boot  string    `json:"boot"`
	Seq   uint64    `json:"seq"`
	MAC   string    `json:"mac"`
	Count uint64    `json:"count"`
	Sig   string    `json:"sig"` // base64 Ed25519 signature of message()
}

func (c *Checkpoint) message() []byte {
	return []byte("portcullis audit checkpoint v1\ntime " + c.Time.UTC().Format(time.RFC3339Nano) +
		"\nnode " + c.Node + "\nboot " + c.Boot + "\nseq " + strconv.FormatUint(c.Seq, 10) +
		"\nmac " + c.MAC + "\ncount " + strconv.FormatUint(c.Count, 10) + "\n")
}

// Sign sets c.Sig.
func (c *Checkpoint) Sign(priv ed25519.PrivateKey) {
	c.Time = c.Time.UTC()
	c.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, c.message()))
}

// Valid reports whether c.Sig is pub's signature of c.
func (c *Checkpoint) Valid(pub ed25519.PublicKey) bool {
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	return err == nil && len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, c.message(), sig)
}

// Line returns c as one JSON line with its newline.
func (c *Checkpoint) Line() []byte {
	b, _ := json.Marshal(c)
	return append(b, '\n')
}

// CheckpointLine is a checkpoint read from a file, or why its line is unusable.
type CheckpointLine struct {
	Checkpoint
	Path string
	Line int
	Err  error // the line is not a checkpoint
}

// ReadCheckpoints reads a checkpoints file. A partial last line (a crash
// while appending) is skipped.
func ReadCheckpoints(path string) ([]CheckpointLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var out []CheckpointLine
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 || line[len(line)-1] != '\n' {
			if err != nil {
				return out, nil
			}
		}
		cl := CheckpointLine{Path: path, Line: n}
		if e := json.Unmarshal(line, &cl.Checkpoint); e != nil {
			cl.Err = fmt.Errorf("not a checkpoint: %v", e)
		}
		out = append(out, cl)
		if err != nil {
			return out, nil
		}
	}
}
