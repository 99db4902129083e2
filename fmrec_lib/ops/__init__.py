"""Operations: the campaign (plan, tiers, deadline, resume, archive and merge), its cluster
executor, and the speed benchmark."""
