package alerting

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"net/smtp"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	gomail "github.com/go-mail/mail/v2"
)

// The SMTP notifier. go-mail/mail v2 composes the message (multipart
// text+HTML, quoted-printable bodies, RFC 2047 Subject); the transport is
// driven here over net/smtp, because go-mail's Dialer has four defects we
// reproduced here and offers no per-dialer hook to fix them (only the
// process-wide NetDialTimeout variable):
//
//   - its deadline is set after the greeting: a server that accepts and never
//     greets hangs it forever. Here one deadline, set right after the dial,
//     covers the TLS handshake, the greeting and the whole dialogue.
//   - RetryFailure redials without bound. Here an attempt is one dial; the
//     outbox retries with backoff.
//   - opportunistic STARTTLS sent AUTH in clear to a server that stripped
//     STARTTLS. Here tls: starttls makes STARTTLS mandatory (before AUTH and
//     before MAIL), tls: tls is implicit TLS, TLS ≥ 1.2, and AUTH is never
//     sent on a connection that is not TLS.
//   - SetAddressHeader writes addresses raw. Here addresses come only from
//     config, parsed by net/mail at load, and every header value is checked
//     for CR, LF and NUL before DATA.

// ErrNoStartTLS is returned (retryable) when the server does not offer
// STARTTLS although tls is starttls: nothing, credentials least of all, is
// sent in clear.
var ErrNoStartTLS = errors.New("alerting: smtp server does not offer STARTTLS (stripped?); refusing to continue in clear")

// SMTP is a Notifier sending through one SMTP server. It is safe for use by
// multiple goroutines.
type SMTP struct {
	cfg      SMTPConfig
	from     *netmail.Address
	to       []*netmail.Address
	password string
	tls      *tls.Config
}

// NewSMTP checks cfg (see Config.Validate) and reads the password from its
// environment variable or file; getenv nil means os.Getenv.
func NewSMTP(cfg SMTPConfig, getenv func(string) string) (*SMTP, error) {
	c := Config{SMTP: cfg}.withDefaults().SMTP
	if !c.Enabled() {
		return nil, errors.New("alerting: smtp.host and smtp.to are required to send mail")
	}
	if errs := c.validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s := &SMTP{cfg: c}
	s.from, _ = parseAddress(c.From)
	for _, t := range c.To {
		a, _ := parseAddress(t)
		s.to = append(s.to, a)
	}
	if c.Username != "" {
		p, err := c.Password(getenv)
		if err != nil {
			return nil, err
		}
		s.password = p
	}
	if c.TLSConfig != nil {
		s.tls = c.TLSConfig.Clone()
	} else {
		s.tls = &tls.Config{}
	}
	s.tls.ServerName = c.Host
	s.tls.MinVersion = max(s.tls.MinVersion, tls.VersionTLS12)
	return s, nil
}

// compose builds the mail with go-mail. Only Subject carries text that may
// come from an attacker, through SetHeader, which encodes it; the rest of
// the headers come from config or from us.
func (s *SMTP) compose(m Message) (*gomail.Message, error) {
	gm := gomail.NewMessage()
	gm.SetHeader("From", s.from.String())
	to := make([]string, len(s.to))
	for i, a := range s.to {
		to[i] = a.String()
	}
	gm.SetHeader("To", to...)
	gm.SetHeader("Subject", clean(m.Subject, maxSubject))
	if m.Date.IsZero() {
		m.Date = time.Now()
	}
	gm.SetDateHeader("Date", m.Date)
	if id := m.ID; id != "" && safeID(id) {
		gm.SetHeader("Message-ID", "<"+id+"."+strconv.FormatInt(m.Date.UnixNano(), 36)+"@portcullis.invalid>")
	}
	gm.SetHeader("Auto-Submitted", "auto-generated")
	gm.SetBody("text/plain", m.Text)
	if m.HTML != "" {
		gm.AddAlternative("text/html", m.HTML)
	}
	for _, h := range []string{"From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted"} {
		for _, v := range gm.GetHeader(h) {
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil, fmt.Errorf("alerting: header %s holds CR, LF or NUL; not sent", h)
			}
		}
	}
	return gm, nil
}

func safeID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.') {
			return false
		}
	}
	return len(s) <= 64
}

// Notify sends m in one SMTP attempt bounded by SMTPConfig.Timeout (and by
// ctx). retryable is false for 5xx replies and refused credentials.
func (s *SMTP) Notify(ctx context.Context, m Message) (retryable bool, err error) {
	gm, err := s.compose(m)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	addr := net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return true, fmt.Errorf("alerting: smtp %s: dial: %w", addr, err)
	}
	defer conn.Close()
	// One deadline from here on: TLS handshake, greeting, every command.
	if err := conn.SetDeadline(deadline); err != nil {
		return true, fmt.Errorf("alerting: smtp %s: %w", addr, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	step := "greeting"
	fail := func(err error) (bool, error) {
		return retryableErr(err), fmt.Errorf("alerting: smtp %s: %s: %w", addr, step, err)
	}
	if s.cfg.TLS == ImplicitTLS {
		step = "tls handshake"
		tc := tls.Client(conn, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, s.cfg.Host) // reads the greeting
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	step = "EHLO"
	if err := c.Hello(s.cfg.LocalName); err != nil {
		return fail(err)
	}
	if s.cfg.TLS == StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return true, fmt.Errorf("smtp %s: %w", addr, ErrNoStartTLS)
		}
		step = "STARTTLS"
		if err := c.StartTLS(s.tls); err != nil {
			return fail(err)
		}
	}
	if s.cfg.Username != "" {
		step = "AUTH"
		if _, isTLS := c.TLSConnectionState(); !isTLS {
			return false, fmt.Errorf("alerting: smtp %s: refusing AUTH on a connection without TLS", addr)
		}
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return false, fmt.Errorf("alerting: smtp %s: server offers no AUTH", addr)
		}
		a, err := s.auth(mechs)
		if err != nil {
			return false, fmt.Errorf("alerting: smtp %s: %w", addr, err)
		}
		if err := c.Auth(a); err != nil {
			return fail(err)
		}
	}
	step = "MAIL FROM"
	if err := c.Mail(s.from.Address); err != nil {
		return fail(err)
	}
	step = "RCPT TO"
	for _, t := range s.to {
		if err := c.Rcpt(t.Address); err != nil {
			return fail(err)
		}
	}
	step = "DATA"
	w, err := c.Data()
	if err != nil {
		return fail(err)
	}
	if _, err := gm.WriteTo(w); err != nil {
		_ = w.Close()
		return fail(err)
	}
	if err := w.Close(); err != nil {
		return fail(err)
	}
	_ = c.Quit() // the mail is accepted; a failed QUIT changes nothing
	return false, nil
}

// auth picks PLAIN, else LOGIN; both need TLS (checked by the caller and
// again by the mechanism).
func (s *SMTP) auth(mechs string) (smtp.Auth, error) {
	ms := strings.Fields(strings.ToUpper(mechs))
	for _, m := range ms {
		if m == "PLAIN" {
			return smtp.PlainAuth("", s.cfg.Username, s.password, s.cfg.Host), nil
		}
	}
	for _, m := range ms {
		if m == "LOGIN" {
			return &loginAuth{user: s.cfg.Username, pass: s.password}, nil
		}
	}
	return nil, fmt.Errorf("no supported AUTH mechanism in %q (want PLAIN or LOGIN)", clean(mechs, 64))
}

type loginAuth struct{ user, pass string }

func (a *loginAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS {
		return "", nil, errors.New("LOGIN refused without TLS")
	}
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(from []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch strings.ToLower(strings.TrimSpace(string(from))) {
	case "username:":
		return []byte(a.user), nil
	case "password:":
		return []byte(a.pass), nil
	}
	return nil, errors.New("unexpected LOGIN challenge")
}

// retryableErr: 5xx replies are final, everything else (4xx, timeouts,
// resets, TLS failures) may pass later.
func retryableErr(err error) bool {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code < 500
	}
	return true
}
