package gateway

// Start builds a server (New) and runs it (Run): the tests' one call. The
// gateway's own user, cmd/internal/app, builds first and runs once
// everything that refers to the server is wired.
func Start(o Options) (*Server, error) {
	s, err := New(o)
	if err != nil {
		return nil, err
	}
	if err := s.Run(); err != nil {
		return nil, err
	}
	return s, nil
}
