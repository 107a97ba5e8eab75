// Package checkpoint is recstream's DynamoDB lease and checkpoint store. *Store implements the
// vmware-go-kcl-v2 v1.0.0 checkpoint.Checkpointer interface (plug it in with
// worker.NewWorker(...).WithCheckpointer(store)) and fixes the library's own DynamoCheckpoint:
//
//   - Fencing: every write of a lease holder (renewal, checkpoint, release) is a conditional
//     write on AssignedTo = this worker AND LeaseCounter = the value this worker last wrote, and
//     increments LeaseCounter; every take-over is conditional on the owner and counter it saw.
//     A worker that lost its lease gets an error wrapping ErrLeaseLost and cannot overwrite the
//     new owner's lease or checkpoint.
//   - Expiry as in the Java KCL: a lease held by another worker is expired when its counter has
//     not been seen to change for FailoverTime, measured on this process's monotonic clock from
//     the moment this store first saw the current counter. Other machines' clocks are never
//     compared. HeldUntil gives the holder's own, conservative view of the same deadline.
//   - Paginated, consistent Scans; the table is created on demand (PAY_PER_REQUEST) and waited
//     for with the SDK's table-exists waiter.
//
// Lease stealing (the library's EnableLeaseStealing) is a polite hand-over: ClaimShard writes
// ClaimRequest; the holder's next renewal sees it, stops renewing and fails its consumer, whose
// exit releases the lease; the claimant then takes the free lease. No one takes an unexpired
// lease, so HeldUntil stays a safe bound for the holder's writes.
//
// # Lease states
//
// One row as a store sees it: n is LeaseCounter (0: none yet), +C a ClaimRequest by worker C,
// "-" no write. Every write is conditional on the state it starts from (owner and counter), so
// of two workers acting on one state, one wins and the other gets a *LeaseError.
//
//	from             event                                      to                      write, conditional on
//	(no row)         acquire (GetLease)                         held(1)                 PutItem: no row
//	free(n)          acquire                                    held(n+1)               no owner, counter n
//	held(n)          holder renews or checkpoints               renewed = held(n+1)     owner me, counter n
//	held(n)          holder releases (RemoveLeaseOwner)         released = free(n+1)    owner me, counter n
//	held(n)          worker C claims (ClaimShard)               claimed = held(n)+C     owner, counter n, no claim
//	held(n)+C        holder's renewal: ErrLeaseClaimed          held(n)+C               - (holder stops renewing)
//	held(n)+C        holder checkpoints                         held(n+1)+C             owner me, counter n
//	held(n)+C        holder releases                            free(n+1)+C             owner me, counter n
//	free(n)+C        C acquires (others get ErrLeaseClaimed)    held(n+1)               no owner, counter n
//	free(n)+C        unchanged for FailoverTime (C gone)        free(n)+C, open to all  -
//	held(n)          holder abandons (Abandon)                  held(n), never renewed  - (it will expire)
//	held(n)          unchanged for FailoverTime (local clock)   expired = held(n)       -
//	expired          another worker acquires                    stolen = held(n+1)      owner, counter n
//	stolen           former holder writes: ErrLeaseLost         stolen                  - (refused; lease forgotten)
//	free, SHARD_END  shard no longer listed (RemoveLeaseInfo)   (no row)                no owner or SHARD_END
//
// An acquisition removes the ClaimRequest; a release keeps it. A holder that abandoned a
// lease, or a process restarted under the same worker id, no longer holds it: it waits for the
// expiry like any other worker. With Leasing set, an acquisition is also refused for a
// finished row (SHARD_END), for a child whose parents are not finished, and beyond the fair
// share (see Leasing); no state changes.
//
// The table layout and the protocol are documented in docs/leases.md.
package checkpoint
