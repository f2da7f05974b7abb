"""Launchers: structural sweeps as separate runs, locally or on Slurm through submitit."""
