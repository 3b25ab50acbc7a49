-- Which admin jobs still have a live process. The server running a job
-- refreshes heartbeat_at every few seconds; a job whose heartbeat (or, when it
-- never started, its creation) is older than a minute lost its process, and
-- any server's reconciler marks it failed. Until now every unfinished job was
-- marked failed whenever a server started, so a restart of one replica failed
-- the jobs another replica was still running.
ALTER TABLE admin_jobs ADD COLUMN heartbeat_at TIMESTAMPTZ;
