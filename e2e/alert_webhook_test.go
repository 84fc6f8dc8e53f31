package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// webhookPost is one POST a test receiver got, with its signature checked
// the way docs/ALERTS.md tells a receiver to.
type webhookPost struct {
	body     []byte
	verified bool
	skew     time.Duration // between X-Portcullis-Timestamp and the receipt
}

// alertmanagerMessage mirrors Alertmanager's webhook body (version 4).
type alertmanagerMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   uint64            `json:"truncatedAlerts"`
	Receiver          string            `json:"receiver"`
	Status            string            `json:"status"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []struct {
		Status       string            `json:"status"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
		Fingerprint  string            `json:"fingerprint"`
	} `json:"alerts"`
}

// The bar for webhooks, from the built binary: a token brute force
// from 127.0.0.5 makes exactly one signed POST, in Alertmanager's format,
// naming the rule and the attacking address; the deliveries are audited
// with the receiver's host only; the trail verifies.
func TestAlertWebhookBruteForceOneSignedPost(t *testing.T) {
	const secret = "e2e-webhook-secret-0123456789abcdef"
	var mu sync.Mutex
	var posts []webhookPost
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Portcullis-Timestamp")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		p := webhookPost{body: body, verified: r.Method == http.MethodPost && r.URL.Path == "/hooks/T0PATHSECRET" &&
			hmac.Equal([]byte(want), []byte(r.Header.Get("X-Portcullis-Signature")))}
		if sec, err := strconv.ParseInt(ts, 10, 64); err == nil {
			p.skew = time.Since(time.Unix(sec, 0))
		}
		mu.Lock()
		posts = append(posts, p)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	got := func() []webhookPost {
		mu.Lock()
		defer mu.Unlock()
		return append([]webhookPost(nil), posts...)
	}
	keyFile := filepath.Join(t.TempDir(), "webhook.key")
	if err := os.WriteFile(keyFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, fmt.Sprintf(`bans: {allow: ["127.0.0.1"]}
alerting:
  webhooks:
    - url: "%s/hooks/T0PATHSECRET?token=Q0SECRET"
      secret_file: %q
      timeout: 5s
  group_wait: 2s
`, recv.URL, keyFile))

	rc := upgradeFrom(t, s, "127.0.0.5")
	for i := 0; i < 5; i++ {
		rc.sendJSON(subMsg(i, "news", "u1", wrongToken(i)))
		if m := rc.readMsg(); m["code"] != "auth_failed" {
			t.Fatalf("wrong token %d: %v", i, m)
		}
	}
	if _, code := rc.drain(); code != 1008 {
		t.Fatalf("banned connection closed with %d, want 1008", code)
	}
	for i := 0; i < 20; i++ { // knocking while banned makes no further alert
		if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).Dial("tcp", s.wsAddr); err == nil {
			c.Close()
		}
	}
	checkFor(t, 15*time.Second, func() error {
		if len(got()) == 0 {
			return fmt.Errorf("no POST yet")
		}
		return nil
	})
	s.waitAudit(map[string]any{"event": "alert_sent", "reason": "sent"})
	// The stop puts every group with unsent events into the outbox, each
	// audited as queued: after it, the trail says how many POSTs there
	// would ever be.
	s.stop()
	host := strings.TrimPrefix(recv.URL, "http://")
	queued, sent := 0, 0
	for _, e := range s.auditLines() {
		d, _ := e["detail"].(string)
		if strings.Contains(d, "T0PATHSECRET") || strings.Contains(d, "Q0SECRET") || strings.Contains(d, secret) {
			t.Fatalf("audit line shows the webhook's path, query or secret: %v", e)
		}
		if e["event"] == "alert_sent" && strings.Contains(d, " to=webhook:"+host+":") {
			switch e["reason"] {
			case "queued":
				queued++
			case "sent":
				sent++
			}
		}
	}
	ps := got()
	if len(ps) != 1 || queued != 1 || sent != 1 {
		t.Fatalf("%d POSTs, %d queued and %d sent audited for webhook:%s; want exactly one", len(ps), queued, sent, host)
	}
	p := ps[0]
	if !p.verified {
		t.Fatal("the POST's signature does not verify as documented")
	}
	if p.skew < -time.Minute || p.skew > time.Minute {
		t.Fatalf("X-Portcullis-Timestamp is %s off", p.skew)
	}
	var m alertmanagerMessage
	dec := json.NewDecoder(strings.NewReader(string(p.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("not Alertmanager's webhook format: %v\n%s", err, p.body)
	}
	if m.Version != "4" || m.Status != "firing" || len(m.Alerts) != 1 || m.Alerts[0].Labels["alertname"] != "ban" ||
		m.Alerts[0].Labels["severity"] != "critical" {
		t.Fatalf("message %s", p.body)
	}
	desc := m.Alerts[0].Annotations["description"]
	for _, want := range []string{"127.0.0.5", "portcullis ban rm 127.0.0.5/32"} {
		if !strings.Contains(desc, want) || !strings.Contains(m.CommonAnnotations["description"], want) {
			t.Fatalf("description lacks %q:\n%s", want, desc)
		}
	}
	if out, code := audVerify(t, s.data); code != 0 {
		t.Fatalf("audit verify exit %d:\n%s", code, out)
	}
}
