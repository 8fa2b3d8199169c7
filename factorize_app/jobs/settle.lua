-- When jobs go back to the queue (in finish_jobs' transaction): settle their clients' accounts in
-- fair order (settle_accounts.lua; finish.lua settles those of the jobs it records itself).
--- KEYS: waiting used running holders
--- ARGV: clients_prefix worker #accounts[client running use] handed_back[client id]
-- waiting, used, running, holders: the type's waiting clients, their use, their running jobs,
-- the long jobs' holders. clients_prefix: of the type's clients' lists; worker: the worker's key.
-- Per account: a client, the change of its running count and of its use (seconds). Per job
-- handed back (front-most last): its client and id.
settle_accounts(K.waiting, K.used, K.running, K.holders, A.worker, A.clients_prefix, accounts, handed_back)
return 1
