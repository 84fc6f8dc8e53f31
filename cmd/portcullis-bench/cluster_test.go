package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_publish:calls=120,usec=300,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_set:calls=7,usec=10,usec_per_call=1.43,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n"
	st, err := parseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	want := commandStats{"publish": 120, "set": 7, "info": 3, "client|setinfo": 2}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("parsed %v, want %v", st, want)
	}
	earlier := commandStats{"publish": 20, "set": 7, "info": 1}
	total, pub := st.since(earlier, "publish")
	if total != 102 || pub != 100 { // 100 publish + 2 client|setinfo; INFO left out
		t.Fatalf("since: total %d publish %d, want 102 and 100", total, pub)
	}
	if _, err := parseCommandStats("cmdstat_get:calls=x,usec=1\r\n"); err == nil || !strings.Contains(err.Error(), "cmdstat_get") {
		t.Fatalf("bad calls accepted or not named: %v", err)
	}
}

func TestReadRESP(t *testing.T) {
	for in, want := range map[string]string{"+PONG\r\n": "PONG", "$5\r\nab\r\nc\r\n": "ab\r\nc", "$0\r\n\r\n": "", ":42\r\n": "42"} {
		got, err := readRESP(bufio.NewReader(strings.NewReader(in)))
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"-ERR unknown command\r\n", "*1\r\n", "$-1\r\n", "$9\r\nshort\r\n", ""} {
		if got, err := readRESP(bufio.NewReader(strings.NewReader(in))); err == nil {
			t.Errorf("%q accepted as %q", in, got)
		}
	}
}

func TestRoundRobin(t *testing.T) {
	toks := []string{"t0", "t1", "t2", "t3", "t4", "t5", "t6"}
	var all []int
	for k, want := range [][]int{{0, 3, 6}, {1, 4}, {2, 5}} {
		got, users := roundRobin(toks, k, 3)
		if !reflect.DeepEqual(users, want) {
			t.Fatalf("member %d: users %v, want %v", k, users, want)
		}
		for i, u := range users {
			if got[i] != toks[u] {
				t.Fatalf("member %d: token %q for user %d", k, got[i], u)
			}
		}
		all = append(all, users...)
	}
	if len(all) != len(toks) {
		t.Fatalf("%d of %d tokens placed", len(all), len(toks))
	}
	if got, users := roundRobin(toks, 0, 1); !reflect.DeepEqual(got, toks) || users[6] != 6 {
		t.Fatalf("one member: %v %v", got, users)
	}
}

func TestJobUser(t *testing.T) {
	j := job{FirstUser: 10}
	if j.user(2) != 12 {
		t.Fatal("contiguous users")
	}
	j.Users = []int{4, 7}
	if j.user(1) != 7 {
		t.Fatal("explicit users")
	}
}

func TestNodesFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"fanout", "--help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "--nodes") {
		t.Fatalf("fanout --help: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"idle", "--help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "--cluster") {
		t.Fatalf("idle --help: exit %d\n%s", code, out.String())
	}
	if testing.Short() {
		t.Skip("locates or builds the gateway")
	}
	errb.Reset()
	if code := run([]string{"fanout", "--nodes", "0"}, io.Discard, &errb); code != exitFailure || !strings.Contains(errb.String(), "--nodes 0: at least 1") {
		t.Fatalf("--nodes 0: exit %d, %s", code, errb.String())
	}
}

// The bench's own redis-server: started, answering INFO commandstats with
// the commands sent, stopped with its directory removed.
func TestStartRedis(t *testing.T) {
	if _, err := redisBinary(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	r, err := startRedis()
	if err != nil {
		t.Fatal(err)
	}
	defer r.stop()
	before, err := r.commandStats()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := r.do("PUBLISH bench:x hello"); err != nil || got != "0" {
			t.Fatalf("PUBLISH to no subscriber: %q %v", got, err)
		}
	}
	after, err := r.commandStats()
	if err != nil {
		t.Fatal(err)
	}
	if total, pub := after.since(before, "publish"); pub != 3 || total != 3 {
		t.Fatalf("after 3 PUBLISH: total %d publish %d", total, pub)
	}
	if _, err := r.do("NOSUCH"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("an error reply: %v", err)
	}
	dir := r.dir
	r.stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory left behind: %v", err)
	}
	if _, err := r.do("PING"); err == nil {
		t.Fatal("redis-server still answers after stop")
	}
}

// Each command's flag has its own default: idle --conns 15000,
// handshake --conns 5000 (one shared variable took the last default).
func TestConnsDefaults(t *testing.T) {
	var gw string
	root := rootCommand(&gw)
	for name, want := range map[string]string{"idle": "15000", "handshake": "5000"} {
		c, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Flags().Lookup("conns").Value.String(); got != want {
			t.Errorf("%s --conns defaults to %s, want %s", name, got, want)
		}
	}
}
