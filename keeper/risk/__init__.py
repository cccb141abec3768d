"""Exact health-factor math: integer functions mirroring the contracts' rounding."""
