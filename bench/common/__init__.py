"""What the measurements share: servers (sentiment-server in a subprocess, the slowed one,
the seed's Flask app), loads (h2load, the soak's mix), the IMDB review sample, plots, and
make bench's plan and progress lines. Imports nothing of bench outside this package.
"""
