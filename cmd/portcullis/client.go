package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// adminClient talks to a running gateway's admin API. It finds the URL and
// key from --admin/--key, else PORTCULLIS_ADMIN_URL/PORTCULLIS_ADMIN_KEY,
// else the files serve wrote into the data dir.
type adminClient struct {
	url, key, data string
	http           *http.Client
}

func (a *adminClient) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.url, "admin", "", "admin API URL (default: $PORTCULLIS_ADMIN_URL, else <data>/admin.url, else http://127.0.0.1:8081)")
	cmd.Flags().StringVar(&a.key, "key", "", "admin key (default: $PORTCULLIS_ADMIN_KEY, else <data>/admin.key)")
	cmd.Flags().StringVar(&a.data, "data", defaultDataDir(), "data directory of the gateway")
}

func (a *adminClient) resolve() error {
	if a.url == "" {
		a.url = os.Getenv("PORTCULLIS_ADMIN_URL")
	}
	if a.url == "" {
		if b, err := os.ReadFile(filepath.Join(a.data, "admin.url")); err == nil {
			a.url = strings.TrimSpace(string(b))
		}
	}
	if a.url == "" {
		a.url = "http://127.0.0.1:8081"
	}
	a.url = strings.TrimRight(a.url, "/")
	if a.key == "" {
		a.key = os.Getenv("PORTCULLIS_ADMIN_KEY")
	}
	if a.key == "" {
		p := filepath.Join(a.data, "admin.key")
		b, err := os.ReadFile(p)
		if err != nil {
			return failf("no admin key: pass --key, set PORTCULLIS_ADMIN_KEY, or point --data at the gateway's data dir (%v)", err)
		}
		a.key = strings.TrimSpace(string(b))
	}
	a.http = &http.Client{Timeout: 15 * time.Second}
	return nil
}

// apiError is a non-2xx answer of the admin API.
type apiError struct {
	method, path string
	status       int
	code, msg    string // the API's JSON error, when it sent one
}

func (e *apiError) Error() string {
	if e.code == "" {
		return fmt.Sprintf("%s %s: HTTP %d", e.method, e.path, e.status)
	}
	return fmt.Sprintf("%s %s: %d %s: %s", e.method, e.path, e.status, e.code, e.msg)
}

// call sends body (marshalled to JSON unless nil) and decodes the reply into
// out. A non-2xx reply becomes an error carrying the API's message.
func (a *adminClient) call(method, path string, body, out any) error {
	if err := a.resolve(); err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		return failf("admin URL %q: %v", a.url, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return failf("cannot reach the admin API at %s (is `portcullis serve` running?): %v", a.url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return failf("read reply from %s: %v", a.url, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{method: method, path: path, status: resp.StatusCode}
		var e struct{ Error, Message string }
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			ae.code, ae.msg = e.Error, e.Message
		}
		return &exitError{code: exitFailure, err: ae}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return failf("decode reply: %v", err)
		}
	}
	return nil
}

func tokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "mint tokens through the admin API"}
	var a adminClient
	var user string
	var topicList []string
	var ttl time.Duration
	var asJSON bool
	issue := &cobra.Command{
		Use:   "issue --user ID [--topic T]... [--ttl 60s]",
		Short: "mint a one-use token for a user",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if user == "" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--user is required")}
			}
			body := map[string]any{"userId": user}
			if len(topicList) > 0 {
				body["topics"] = topicList
			}
			if ttl > 0 {
				body["ttl"] = ttl.String()
			}
			var out struct {
				Token     string `json:"token"`
				UserID    string `json:"userId"`
				ExpiresAt string `json:"expires_at"`
			}
			if err := a.call("POST", "/v1/tokens", body, &out); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(out)
			}
			fmt.Println(out.Token)
			fmt.Fprintf(os.Stderr, "user %s, expires %s\n", out.UserID, out.ExpiresAt)
			return nil
		},
	}
	a.flags(issue)
	issue.Flags().StringVar(&user, "user", "", "user id the token is bound to (required)")
	issue.Flags().StringArrayVar(&topicList, "topic", nil, "limit the token to this topic or pattern (repeatable)")
	issue.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default 60s, at most tokens.max_ttl)")
	issue.Flags().BoolVar(&asJSON, "json", false, "print the full reply as JSON")
	cmd.AddCommand(issue)
	return cmd
}

func publishCommand() *cobra.Command {
	var a adminClient
	var user string
	cmd := &cobra.Command{
		Use:   "publish TOPIC JSON",
		Short: "publish a JSON value to a topic through the admin API",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !json.Valid([]byte(args[1])) {
				return &exitError{code: exitUsage, err: fmt.Errorf("JSON argument is not valid JSON: %s", args[1])}
			}
			body := map[string]any{"topic": args[0], "data": json.RawMessage(args[1])}
			if user != "" {
				body["topic"] = strings.ReplaceAll(args[0], "{userId}", user)
			}
			var out struct {
				Delivered int `json:"delivered"`
			}
			if err := a.call("POST", "/v1/publish", body, &out); err != nil {
				return err
			}
			fmt.Printf("delivered to %d subscriber(s)\n", out.Delivered)
			return nil
		},
	}
	a.flags(cmd)
	cmd.Flags().StringVar(&user, "user", "", "substitute this user id for {userId} in TOPIC")
	return cmd
}
