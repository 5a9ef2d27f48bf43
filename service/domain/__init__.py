"""The pure core: conference and participant rules, numbers, money and events. No I/O, no clock."""
