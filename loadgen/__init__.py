"""rtbserve's open-loop load generator (`rtbserve loadgen`).

Requests leave on a fixed schedule whatever the server does, and every latency is measured from
the request's intended send time, so a slow or stalled server shows up in the percentiles instead
of silently slowing the generator down (no coordinated omission).
"""
