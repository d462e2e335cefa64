package integration

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
