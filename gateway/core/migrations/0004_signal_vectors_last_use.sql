-- Routing signals expire (routing.signals_retention_days), and a prompt's vector goes with the
-- last signal that refers to it: from now on a vector's ts is its last use (a write of a vector
-- already stored moves ts forward), no longer its first write. Vectors stored before take the
-- ts of the latest signal that refers to them, so that none still in use is swept. The sweep
-- finds expired signals through signals_kind_ts and their vectors by key: no new index.
UPDATE signal_vectors v SET ts = last.ts
FROM (SELECT vector_key, max(ts) AS ts FROM signals WHERE vector_key IS NOT NULL
      GROUP BY vector_key) AS last
WHERE v.key = last.vector_key AND last.ts > v.ts;
