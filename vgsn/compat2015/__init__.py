"""The 2015 author code's saved networks: read (restricted unpickling), load into vgsn, write
back, and compare vgsn's free-energy terms with the 2015 code's."""
