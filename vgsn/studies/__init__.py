"""Many runs: sweeps over a grid and seeds (local or Slurm through submitit) and the
reproduction check of the paper's Sec. 7 claims."""
