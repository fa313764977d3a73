"""Operations on a deployment from the command line: status, trimming, dead letters, publishing entries."""
