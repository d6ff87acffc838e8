-- One demo sender worker (run twice at once by demo_billing.sql): lease due surveys with
-- claim_surveys(), "send" them, and report each delivery with mark_sent() or, for the 2 % of
-- addresses that bounce (demo.plan_survey.bounces), mark_failed() with an immediate retry until
-- the source's max_attempts turns the survey 'failed'.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SELECT set_config('demo.worker', :'worker', false) AS worker \gset
DO $$
DECLARE n integer;
BEGIN
  LOOP
    WITH claimed AS (SELECT c.id FROM nps_billing.claim_surveys(current_setting('demo.worker'), 2000) c),
    done AS (
      SELECT CASE WHEN p.bounces
                  THEN nps_billing.mark_failed(c.id, current_setting('demo.worker'), 'mailbox unavailable', '0 seconds')
                  ELSE (nps_billing.mark_sent(c.id, current_setting('demo.worker')))::text END AS r
      FROM claimed c JOIN demo.plan_survey p ON p.id = c.id)
    SELECT count(*) INTO n FROM done;
    EXIT WHEN n = 0;
    COMMIT;  -- each batch commits: the other worker sees the queue move
  END LOOP;
END $$;
