-- CPX ledger and lifecycle invariants, in SQL against the PostgreSQL database.
--
--   psql "$DATABASE_URL" -f scripts/ledger_invariants.sql        (each query lists its violations)
--   python manage.py cpx_check_ledger [--json]                    (counts per check; exit 1 on any)
--
-- Each check is one SELECT headed by `-- check: <name>: <what must hold>`; every row it returns is
-- a violation. The chaos suite (python -m tests.chaos) runs them after every fault it injects.
-- Final job states: COMPLETED, FAILED, CANCELLED, EXPIRED; a live lease is DISPATCHED or RUNNING.

-- check: double_entry: every account's balance is the sum of its transfers (credits - debits)
SELECT a.id, a.kind, a.balance,
       COALESCE(c.total, 0) - COALESCE(d.total, 0) AS from_transfers
FROM market_ledgeraccount a
LEFT JOIN (SELECT credit_id AS id, SUM(amount) AS total FROM market_ledgertransfer GROUP BY credit_id) c
  ON c.id = a.id
LEFT JOIN (SELECT debit_id AS id, SUM(amount) AS total FROM market_ledgertransfer GROUP BY debit_id) d
  ON d.id = a.id
WHERE a.balance <> COALESCE(c.total, 0) - COALESCE(d.total, 0);

-- check: books_balance: all balances together sum to exactly zero (the outside world included)
SELECT SUM(balance) AS total FROM market_ledgeraccount HAVING SUM(balance) <> 0;

-- check: no_negative_balance: no account but the outside world is below zero
SELECT id, kind, balance FROM market_ledgeraccount WHERE kind <> 'EXTERNAL' AND balance < 0;

-- check: conservation: deposits - withdrawals = consumer balances + escrow + earnings + fees + penalties
SELECT deposits, held
FROM (SELECT COALESCE(SUM(CASE WHEN kind = 'DEPOSIT' THEN amount WHEN kind = 'WITHDRAWAL' THEN -amount END), 0)
             AS deposits FROM market_ledgertransfer) t,
     (SELECT COALESCE(SUM(balance), 0) AS held FROM market_ledgeraccount
       WHERE kind IN ('CONSUMER', 'ESCROW', 'PROVIDER', 'PLATFORM_FEE', 'PENALTY')) b
WHERE deposits <> held;

-- check: budget_held_once: every submitted job moved exactly its budget into its escrow, once
SELECT j.id, j.budget, COALESCE(SUM(t.amount), 0) AS held, COUNT(t.id) AS holds
FROM market_jobrequest j
LEFT JOIN market_ledgertransfer t ON t.job_id = j.id AND t.kind = 'HOLD'
GROUP BY j.id, j.budget
HAVING COUNT(t.id) <> 1 OR COALESCE(SUM(t.amount), 0) <> j.budget;

-- check: escrow_of_live_jobs: a live job's escrow is its budget less what its settled leases took
SELECT j.id, j.status, j.budget, a.balance, COALESCE(SUM(t.amount), 0) AS paid_out
FROM market_jobrequest j
JOIN market_ledgeraccount a ON a.job_id = j.id AND a.kind = 'ESCROW'
LEFT JOIN market_ledgertransfer t ON t.debit_id = a.id
WHERE j.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED')
GROUP BY j.id, j.status, j.budget, a.balance
HAVING a.balance <> j.budget - COALESCE(SUM(t.amount), 0) OR a.balance > j.budget;

-- check: escrow_empty_when_closed: a job in a final state holds nothing in escrow
SELECT j.id, j.status, a.balance
FROM market_jobrequest j JOIN market_ledgeraccount a ON a.job_id = j.id AND a.kind = 'ESCROW'
WHERE j.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED') AND a.balance <> 0;

-- check: paid_once: a lease is paid (and charged a fee, and penalised) at most once
SELECT l.id, t.kind, COUNT(*) AS transfers
FROM auctions_lease l
JOIN market_ledgertransfer t
  ON t.reference IN ('lease:' || l.id || ':payment', 'lease:' || l.id || ':fee', 'lease:' || l.id || ':penalty')
GROUP BY l.id, t.kind HAVING COUNT(*) > 1;

-- check: paid_only_when_completed: only a COMPLETED lease is paid
SELECT l.id, l.status
FROM auctions_lease l
JOIN market_ledgertransfer t ON t.reference = 'lease:' || l.id || ':payment'
WHERE l.status <> 'COMPLETED';

-- check: not_paid_and_refunded: a job refunded its whole budget paid no provider
SELECT j.id, j.budget
FROM market_jobrequest j
JOIN market_ledgertransfer r ON r.job_id = j.id AND r.kind = 'REFUND' AND r.amount = j.budget
WHERE EXISTS (SELECT 1 FROM market_ledgertransfer p WHERE p.job_id = j.id AND p.kind IN ('PAYMENT', 'FEE'));

-- check: escrow_never_overdrawn: what left a job's escrow is at most what entered it
SELECT a.job_id, COALESCE(i.total, 0) AS came_in, COALESCE(o.total, 0) AS went_out
FROM market_ledgeraccount a
LEFT JOIN (SELECT credit_id AS id, SUM(amount) AS total FROM market_ledgertransfer GROUP BY credit_id) i ON i.id = a.id
LEFT JOIN (SELECT debit_id AS id, SUM(amount) AS total FROM market_ledgertransfer GROUP BY debit_id) o ON o.id = a.id
WHERE a.kind = 'ESCROW' AND COALESCE(o.total, 0) > COALESCE(i.total, 0);

-- check: no_live_lease_on_closed_job: no lease is DISPATCHED or RUNNING on a job in a final state
SELECT l.id, l.status, j.id AS job_id, j.status AS job_status
FROM auctions_lease l JOIN market_jobrequest j ON j.id = l.job_id
WHERE l.status IN ('DISPATCHED', 'RUNNING') AND j.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED');
