"""The continual-learning scenario: a traffic simulator of drifting cohorts, its report and plots."""
