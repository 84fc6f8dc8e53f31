package e2e

import (
	"crypto/sha256"
	"encoding/hex"
)

// fp is the token fingerprint the audit trail carries.
func fp(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:4])
}
