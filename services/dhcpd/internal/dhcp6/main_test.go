package dhcp6

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
