-- Follow-ups: created with the answer per source policy, the state machine and its exact errors.
SET search_path = nps_billing, public;
-- explicit ids: messages name them, and other files may have used the sequences
SELECT setval('follow_up_id_seq', 5000, false) IS NOT NULL AS seq_set;
CREATE TABLE fu_regress_pay (id int);
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (8500, 'fu_regress', 'fu_regress_pay', 'x', 'y', 'z');
INSERT INTO survey (id, token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT 8500 + g, 'fu-tok-' || g, 8500, 'fu-cust-' || g, 'email', 'sent', now() - interval '1 day', now() + interval '1 day'
  FROM generate_series(1, 8) g;
-- what a follow-up looks like next to its answer (due_in: due time after the follow-up was made)
CREATE VIEW pg_temp.fu AS
  SELECT f.id, r.customer_id, r.score, f.reason, f.status, f.source_id, f.due_at - f.created_at AS due_in,
         f.assignee, f.contacted_at IS NOT NULL AS contacted, f.closed_at IS NOT NULL AS closed,
         f.answer_changed_at IS NOT NULL AS answer_changed, f.still_needed
    FROM follow_up f JOIN response r ON r.id = f.response_id
   WHERE r.customer_id LIKE 'fu-%';

-- the default policy: detractors only, due 2 days after the answer
SELECT record_response('fu-tok-1', 3, 'Charged twice this month') IS NOT NULL AS recorded;
SELECT record_response('fu-tok-2', 8) IS NOT NULL AS recorded;
SELECT record_response('fu-tok-3', 10, 'Great') IS NOT NULL AS recorded;
SELECT * FROM pg_temp.fu ORDER BY id;

-- a policy for the source: passives too, and any answer with a comment, due in 4 hours
INSERT INTO follow_up_policy (source_id, categories, with_comment, sla)
VALUES (8500, '{detractor,passive}', true, '4 hours');
SELECT record_response('fu-tok-4', 7) IS NOT NULL AS recorded;
SELECT record_response('fu-tok-5', 10, 'Love the new invoices') IS NOT NULL AS recorded;
SELECT record_response('fu-tok-6', 9, '   ') IS NOT NULL AS recorded;   -- a blank comment is none
SELECT * FROM pg_temp.fu ORDER BY id;

-- imported answers (plain INSERT / COPY): the policy of their payment's source, else source 0
-- (the defaults: due 2 days after the answer, given a day ago); too old when recorded (max_age,
-- 30 days by default), or no customer: none
INSERT INTO response (customer_id, score, comment, responded_at) VALUES
  ('fu-imp-1', 2, 'imported, recent', now() - interval '1 day'),
  ('fu-imp-2', 1, 'imported, old', '2024-01-01'),
  (NULL, 0, 'imported, anonymous', now());
SELECT * FROM pg_temp.fu WHERE customer_id LIKE 'fu-imp-%' ORDER BY id;

-- claim: earliest due first, with the answer and its context
SELECT id, status, reason, customer_id, score, category, comment, source, notes, lease_until > now() AS leased
  FROM claim_follow_ups('agent-a', 10);
-- held follow-ups are not claimed again
SELECT id FROM claim_follow_ups('agent-b', 1);
SELECT id, assignee FROM pg_temp.fu ORDER BY id;

-- errors: messages name the follow-up, the agent and the value, never the customer or the note
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT update_follow_up(5000, 'agent-b', 'contacted');            -- not the holder
SELECT update_follow_up(5000, 'agent-a', 'resolved');             -- closing is resolve_follow_up's
SELECT update_follow_up(5000, 'agent-a', 'open');
SELECT update_follow_up(5000, 'agent-a');                          -- nothing to do
SELECT update_follow_up(5000, 'agent-a', NULL, '   ');
SELECT update_follow_up(5000, 'agent-a', NULL, repeat('x', 10001));
SELECT update_follow_up(NULL, 'agent-a', 'contacted');
SELECT update_follow_up(5000, NULL, 'contacted');
SELECT update_follow_up(999999, 'agent-a', 'contacted');          -- unknown: the same refusal
SELECT resolve_follow_up(5000, 'agent-a', 'fixed');
SELECT resolve_follow_up(5000, 'agent-a', NULL);
SELECT resolve_follow_up(5000, 'agent-b');
SELECT release_follow_up(5000, 'agent-b');
SELECT * FROM claim_follow_ups(NULL);
SELECT * FROM claim_follow_ups('');
SELECT * FROM claim_follow_ups('agent-a', 0);
SELECT * FROM claim_follow_ups('agent-a', 1001);
SELECT * FROM claim_follow_ups('agent-a', 1, '-1 hour');
SELECT * FROM claim_follow_ups('agent-a', 1, '31 days');
SELECT * FROM claim_follow_ups('agent-a', 1, '1 day -25 hours');
SELECT * FROM follow_up_metrics(NULL);
SELECT * FROM follow_up_metrics('2026-01-02', '2026-01-01');
SELECT * FROM follow_up_metrics(after => '1 hour');
-- the policy table checks its values
INSERT INTO follow_up_policy (source_id, sla) VALUES (8501, '0');
INSERT INTO follow_up_policy (source_id, max_age) VALUES (8501, '-1 day');
INSERT INTO follow_up_policy (source_id) VALUES (-1);

-- open -> contacted (with notes) -> resolved
SELECT update_follow_up(5000, 'agent-a', 'contacted', 'Called: charged twice, refund promised');
SELECT update_follow_up(5000, 'agent-a', note => 'Refund issued');
SELECT update_follow_up(5000, 'agent-a', 'contacted');             -- again: stays contacted
SELECT resolve_follow_up(5000, 'agent-a', note => 'Customer confirmed the refund');
-- closed: nobody holds it any more
SELECT update_follow_up(5000, 'agent-a', note => 'late note');
SELECT resolve_follow_up(5000, 'agent-a');
SELECT author, author_role = session_user AS by_session_user, status, body FROM follow_up_note WHERE follow_up_id = 5000 ORDER BY id;
-- open -> wont_fix without contact
SELECT resolve_follow_up(5003, 'agent-a', 'wont_fix', 'Test account');
-- release: back to the queue unchanged, then anyone may claim it
SELECT release_follow_up(5002, 'agent-a');
SELECT update_follow_up(5002, 'agent-a', 'contacted');
SELECT id, status FROM claim_follow_ups('agent-b', 1);
SELECT * FROM pg_temp.fu ORDER BY id;

-- a replaced answer (a second answer to the same survey) keeps its follow-up, marked:
-- the resolved detractor now a promoter without comment: still resolved, no longer needed,
-- due time unchanged (the SLA runs from the first answer)
SELECT record_response('fu-tok-1', 10) IS NOT NULL AS replaced;
-- the open passive follow-up, now a promoter without comment: still open, no longer needed
SELECT record_response('fu-tok-4', 9) IS NOT NULL AS replaced;
-- the passive of the first round (no follow-up then, no policy), now a detractor: one is made
SELECT record_response('fu-tok-2', 1, 'Actually, no') IS NOT NULL AS replaced;
SELECT * FROM pg_temp.fu ORDER BY id;

-- deleting an answer deletes its follow-up and notes
SELECT update_follow_up(5002, 'agent-b', note => 'to be deleted') IS NOT NULL AS noted;
DELETE FROM response WHERE customer_id = 'fu-cust-5';
SELECT count(*) AS follow_ups, (SELECT count(*) FROM follow_up_note WHERE follow_up_id = 5002) AS notes
  FROM follow_up WHERE id = 5002;

DELETE FROM response WHERE customer_id LIKE 'fu-%' OR comment = 'imported, anonymous';
SELECT count(*) AS follow_ups_left FROM follow_up WHERE id >= 5000;
SELECT count(*) AS notes_left FROM follow_up_note WHERE follow_up_id >= 5000;
DELETE FROM follow_up_policy WHERE source_id = 8500;
DELETE FROM survey WHERE source_id = 8500;
DELETE FROM payment_source WHERE id = 8500;
DROP TABLE fu_regress_pay;
