"""Who the caller is: its identity, verified, and what that identity may do.

- `clients`: a client as the job service counts it (ClientIdentity), its address (behind trusted
  proxies), and what it may read of others' jobs and its caps;
- `api_keys`: API keys verified, cached, counted, and the failed attempts that buy no lookups;
- `authentication`: a request's identity (DRF's authentication and permission, the lean lane's
  cached answer, plain Django views').
"""
