"""Updates and the managers that apply them (see the project issues for the roadmap)."""
