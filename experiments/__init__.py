"""What train.py and evaluate.py share: tasks, run directories, command-line plumbing."""
