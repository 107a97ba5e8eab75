package inference

// Exposed to the external tests, which EXPLAIN the exact statements the index runs.

func (v *VectorIndex) ItemsFromUsersSQL() string { return v.itemsFromUsersSQL() }
func (v *VectorIndex) ItemsFromItemsSQL() string { return v.itemsFromItemsSQL() }
