package chain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// KeyLen is the length of the HMAC key in bytes.
const KeyLen = 32

// LoadOrCreateKey returns the HMAC key stored in path as hex, creating the
// file (0600) with KeyLen random bytes if it does not exist. A key file
// readable by group or others is refused.
func LoadOrCreateKey(path string) ([]byte, error) {
	b, err := readSecret(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, KeyLen)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate audit key: %w", err)
		}
		if err := writeNew(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeKey(path, b, KeyLen)
}

// ReadKey returns the HMAC key stored in path (hex, or KeyLen raw bytes).
func ReadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeKey(path, b, KeyLen)
}

// LoadOrCreateSigner returns the checkpoint signing key stored (hex seed) in
// privPath, creating it (0600) and its public half in pubPath (0644, hex)
// if privPath does not exist. pubPath is rewritten if missing.
func LoadOrCreateSigner(privPath, pubPath string) (ed25519.PrivateKey, error) {
	b, err := readSecret(privPath)
	var priv ed25519.PrivateKey
	switch {
	case errors.Is(err, os.ErrNotExist):
		_, p, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate checkpoint key: %w", err)
		}
		if err := writeNew(privPath, []byte(hex.EncodeToString(p.Seed())+"\n"), 0o600); err != nil {
			return nil, err
		}
		priv = p
	case err != nil:
		return nil, err
	default:
		seed, err := decodeKey(privPath, b, ed25519.SeedSize)
		if err != nil {
			return nil, err
		}
		priv = ed25519.NewKeyFromSeed(seed)
	}
	if _, err := os.Stat(pubPath); errors.Is(err, os.ErrNotExist) {
		pub := priv.Public().(ed25519.PublicKey)
		if err := writeNew(pubPath, []byte(hex.EncodeToString(pub)+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	return priv, nil
}

// ReadPublicKey returns the checkpoint public key stored (hex) in path.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := decodeKey(path, b, ed25519.PublicKeySize)
	return ed25519.PublicKey(k), err
}

func readSecret(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 %s", path, st.Mode().Perm(), path)
	}
	return os.ReadFile(path)
}

func decodeKey(path string, b []byte, n int) ([]byte, error) {
	if len(b) == n {
		return b, nil
	}
	t := bytes.TrimSpace(b)
	k := make([]byte, hex.DecodedLen(len(t)))
	if _, err := hex.Decode(k, t); err != nil || len(k) != n {
		return nil, errorf(path, "not a %d-byte key in hex", n)
	}
	return k, nil
}

func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
