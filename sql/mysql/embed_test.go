package mysqlsql

import (
	"strings"
	"testing"
)

func TestStatementsCreateEveryTable(t *testing.T) {
	stmts := Statements()
	if len(stmts) != len(Tables) {
		t.Fatalf("got %d statements, want one per table (%d)", len(stmts), len(Tables))
	}
	for i, table := range Tables {
		want := "CREATE TABLE IF NOT EXISTS " + table + " ("
		if !strings.HasPrefix(stmts[i], want) {
			t.Errorf("statement %d starts %q, want %q", i, stmts[i][:min(len(stmts[i]), 50)], want)
		}
		if strings.Contains(stmts[i], ";") {
			t.Errorf("statement %d holds a ';'", i)
		}
	}
}
