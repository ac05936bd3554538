"""The offline side of ranking: baselines the served pipeline is measured against (more of training moves here)."""
