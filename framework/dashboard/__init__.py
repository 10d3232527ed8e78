"""`strikebench dashboard`: a local web page for backtest runs, paper/live accounts and sweeps."""
