package clientip

import (
	"net/netip"
	"testing"
)

func TestKey(t *testing.T) {
	cases := []struct {
		addr string
		bits int
		want string
	}{
		{"192.0.2.7", 64, "192.0.2.7/32"},
		{"::ffff:192.0.2.7", 64, "192.0.2.7/32"},
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:3:4:5:6", 0, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"},
		{"fe80::1%eth0", 64, "fe80::/64"},
	}
	for _, c := range cases {
		got := Key(netip.MustParseAddr(c.addr), c.bits)
		if got.String() != c.want {
			t.Errorf("Key(%s, %d) = %s, want %s", c.addr, c.bits, got, c.want)
		}
	}
	if Key(netip.Addr{}, 64).IsValid() {
		t.Error("Key of the zero address is valid")
	}
}
