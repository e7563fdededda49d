"""`make bench`: rtbserve side by side with the limits of this machine and with its peers."""
