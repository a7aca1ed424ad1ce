"""One small router per endpoint group; HTTP only."""
